//! Cases over real HTTP: submissions become a numbered case whose state and
//! deadlines are the fold of its timeline; workers see only their cases;
//! concurrent offline edits raise a conflict a coordinator resolves.

use crate::common;

use casesync::db::schema::audit_log;
use common::build::{self, Staff};
use common::phone::{fixture, form_envelope, phone};
use common::TestApp;
use diesel::prelude::*;
use serde_json::{json, Value};

fn staff(app: &TestApp) -> Staff {
    app.staff().other_worker().build()
}

/// A referral received on Friday 20 November 2026 at 17:00 in Almaty, with
/// evidence of immediate risk.
fn referral(case_id: &str, child_name: &str) -> Value {
    build::referral(case_id)
        .received_at("2026-11-20T17:00:00+05:00")
        .immediate_risk()
        .child(child_name)
        .envelope()
}

/// The initial assessment, completed 44 hours after the referral, with
/// decision 8.5.1(c); no removal.
fn initial_assessment(case_id: &str, base: i64) -> Value {
    let mut data = fixture("kz.initial_assessment");
    data["admin"]["assessment_completed_at"] = json!("2026-11-22T13:00:00+05:00");
    data["admin"]["child_removed"] = json!(false);
    data["admin"].as_object_mut().unwrap().remove("removal_at");
    data["decision"]["ia_decision_date"] = json!("2026-11-22");
    // D15's eight weeks count from the Social Worker's appointment (8.6.1).
    data["decision"]["sa_sw_appointed_at"] = json!("2026-11-22");
    let mut env = form_envelope("kz.initial_assessment", case_id, data);
    env["base_case_version"] = json!(base);
    env
}

fn deadline<'a>(case: &'a Value, rule: &str) -> &'a Value {
    case["deadlines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["rule"] == rule)
        .unwrap_or_else(|| panic!("no {rule} in {:#}", case["deadlines"]))
}

#[test]
fn a_referral_and_its_assessment_make_a_numbered_case_with_deadlines() {
    let app = TestApp::spawn();
    let staff = staff(&app);
    let phone = phone(&app, &staff.worker);

    let case_id = uuid::Uuid::new_v4().to_string();
    let res = phone.send(&referral(&case_id, "Child A"));
    assert_eq!(res.status, 201, "{}", res.text);

    let case = app.get(&format!("/api/v1/cases/{case_id}"), &staff.worker);
    assert_eq!(case.status, 200, "{}", case.text);
    assert_eq!(case.body["number"], "1");
    assert_eq!(case.body["state"], "referred");
    // 48 hours from Friday 17:00 (UTC+5): Sunday 12:00 UTC.
    let d7 = deadline(&case.body, "D7");
    assert_eq!(d7["due_at"], "2026-11-22T12:00:00Z");
    assert!(
        !case.body["deadlines"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["rule"] == "D8"),
        "the 72-hour rule is for referrals without immediate risk"
    );

    // A second child at the same site gets the next number.
    let second = uuid::Uuid::new_v4().to_string();
    assert_eq!(phone.send(&referral(&second, "Child B")).status, 201);
    let other = app.get(&format!("/api/v1/cases/{second}"), &staff.worker);
    assert_eq!(other.body["number"], "2");

    // The assessment 44 hours later meets D7 and, decision (c), starts the
    // social assessment with its 8 weeks.
    let version = case.body["version"].as_i64().unwrap();
    let res = phone.send(&initial_assessment(&case_id, version));
    assert_eq!(res.status, 201, "{}", res.text);
    let case = app.get(&format!("/api/v1/cases/{case_id}"), &staff.worker);
    assert_eq!(case.body["state"], "social_assessment", "{:#}", case.body);
    assert_eq!(deadline(&case.body, "D7")["status"], "met_on_time");
    let d15 = deadline(&case.body, "D15");
    assert_eq!(d15["due_at"], "2027-01-17T18:59:59Z", "{d15:#}");
    assert_eq!(
        case.body["facts"]["kz.ia_decision"],
        "c_reasonable_grounds_for_concern"
    );

    // The timeline lists what happened in the order it happened.
    let timeline = app.get(&format!("/api/v1/cases/{case_id}/timeline"), &staff.worker);
    assert_eq!(timeline.status, 200, "{}", timeline.text);
    let names: Vec<&str> = timeline.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "referral_received",
            "case_assigned",
            "initial_assessment_completed"
        ]
    );
    assert_eq!(
        timeline.body["events"][2]["state_after"],
        "social_assessment"
    );

    // The phone's sync carries the number and what is due, no names.
    let sync = app.get("/api/v1/sync", &staff.worker);
    let synced = sync.body["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == case_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(synced["number"], "1");
    assert!(!synced["next_deadlines"].as_array().unwrap().is_empty());
    assert!(!sync.text.contains("Child A"));

    // Another worker of the same site neither reads it nor syncs it.
    app.get(&format!("/api/v1/cases/{case_id}"), &staff.other_worker)
        .assert_problem(404, "not_found");
    app.get(
        &format!("/api/v1/cases/{case_id}/timeline"),
        &staff.other_worker,
    )
    .assert_problem(404, "not_found");
    let theirs = app.get("/api/v1/sync", &staff.other_worker);
    assert!(!theirs.text.contains(&case_id));
    let listed = app.get("/api/v1/cases", &staff.other_worker);
    assert_eq!(listed.body["items"], json!([]));

    // The coordinator sees both cases, and the morning list of what is late.
    let listed = app.get("/api/v1/cases", &staff.coordinator);
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 2);
    // A page at a time: the cursor picks up after the last case.
    let first_page = app.get("/api/v1/cases?limit=1", &staff.coordinator);
    assert_eq!(first_page.body["items"][0]["number"], "1");
    let cursor = first_page.body["next_cursor"].as_str().unwrap().to_string();
    let second_page = app.get(
        &format!("/api/v1/cases?limit=1&cursor={cursor}"),
        &staff.coordinator,
    );
    assert_eq!(second_page.body["items"][0]["number"], "2");
    assert!(second_page.body["next_cursor"].is_null());
    let overdue = app.get("/api/v1/deadlines?status=overdue", &staff.coordinator);
    assert_eq!(overdue.status, 200, "{}", overdue.text);
    let items = overdue.body["items"].as_array().unwrap();
    assert!(items.iter().all(|d| d["status"] == "overdue"));
    assert!(
        items
            .iter()
            .any(|d| d["case_number"] == "2" && d["rule"] == "D7"),
        "{items:#?}"
    );
    assert!(
        !items
            .iter()
            .any(|d| d["case_number"] == "1" && d["rule"] == "D7"),
        "met deadlines are not on the list"
    );
    // Every read of case content is on the audit log, by whom and of what.
    let reads: Vec<(String, Option<String>)> = audit_log::table
        .filter(audit_log::action.eq_any(["case_read", "case_timeline_read", "deadlines_listed"]))
        .select((audit_log::action, audit_log::object_id))
        .load(&mut app.conn())
        .unwrap();
    assert!(reads.contains(&("case_timeline_read".into(), Some(case_id.clone()))));
    assert!(reads.iter().any(|(a, _)| a == "deadlines_listed"));
    assert!(reads.iter().filter(|(a, _)| a == "case_read").count() >= 3);
    let overdue_cases = app.get("/api/v1/cases?overdue=true", &staff.coordinator);
    assert!(overdue_cases.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["overdue"] == true));
}

#[test]
fn two_offline_edits_of_one_fact_raise_one_conflict_for_the_coordinator() {
    let app = TestApp::spawn();
    let staff = staff(&app);
    let worker_phone = phone(&app, &staff.worker);
    let coordinator_phone = phone(&app, &staff.coordinator);
    let case_id = uuid::Uuid::new_v4().to_string();
    assert_eq!(
        worker_phone.send(&referral(&case_id, "Child A")).status,
        201
    );
    let base = app
        .get(&format!("/api/v1/cases/{case_id}"), &staff.worker)
        .body["version"]
        .as_i64()
        .unwrap();

    // Both edit the child's record offline from the same case version.
    let child_record = |sex: &str, day: &str| build::offline_child_record(&case_id, base, sex, day);
    let first = worker_phone.send(&child_record("male", "2026-11-21"));
    assert_eq!(first.status, 201, "{}", first.text);
    let second = coordinator_phone.send(&child_record("female", "2026-11-22"));
    assert_eq!(second.status, 201, "{}", second.text);

    let conflicts = app.get("/api/v1/conflicts", &staff.coordinator);
    let items = conflicts.body["items"].as_array().unwrap().clone();
    let on_sex: Vec<&Value> = items.iter().filter(|c| c["fact"] == "child.sex").collect();
    assert_eq!(on_sex.len(), 1, "{items:#?}");
    let conflict = on_sex[0];
    assert_eq!(conflict["event_value"], "\"female\"");
    assert_eq!(conflict["other_value"], "\"male\"");
    // The programme's rule: the later occurred_at wins until someone decides.
    let case = app.get(&format!("/api/v1/cases/{case_id}"), &staff.coordinator);
    assert_eq!(case.body["facts"]["child.sex"], "female");
    assert!(case.body["open_conflicts"].as_i64().unwrap() >= 1);

    // A field worker may not resolve; the coordinator picks the other value.
    let path = format!(
        "/api/v1/conflicts/{}/resolution",
        conflict["id"].as_str().unwrap()
    );
    app.post(&path, &staff.worker, json!({"choice": "other"}))
        .assert_problem(403, "forbidden");
    // Another site's coordinator is told what a made-up conflict gets
    // (#14, item 16): no existence oracle.
    let (_, elsewhere) = app.user(&staff.admin, "shymkent", "coordinator", &["KZ-CAM-SHY"]);
    let hidden = app.post(&path, &elsewhere, json!({"choice": "other"}));
    let made_up = app.post(
        &format!("/api/v1/conflicts/{}/resolution", uuid::Uuid::new_v4()),
        &elsewhere,
        json!({"choice": "other"}),
    );
    assert_eq!(
        hidden.assert_problem(404, "not_found"),
        made_up.assert_problem(404, "not_found")
    );
    let resolved = app.post(&path, &staff.coordinator, json!({"choice": "other"}));
    assert_eq!(resolved.status, 200, "{}", resolved.text);
    assert_eq!(resolved.body["status"], "resolved");
    app.post(&path, &staff.coordinator, json!({"choice": "other"}))
        .assert_problem(409, "conflict");
    let case = app.get(&format!("/api/v1/cases/{case_id}"), &staff.coordinator);
    assert_eq!(case.body["facts"]["child.sex"], "male");
    let timeline = app.get(
        &format!("/api/v1/cases/{case_id}/timeline"),
        &staff.coordinator,
    );
    assert!(timeline.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["name"] == "conflict_resolved"));
}

#[test]
fn coordinators_assign_and_approve_as_timeline_events() {
    let app = TestApp::spawn();
    let staff = staff(&app);
    let phone = phone(&app, &staff.worker);
    let case_id = uuid::Uuid::new_v4().to_string();
    assert_eq!(phone.send(&referral(&case_id, "Child A")).status, 201);
    let bolat = app.get("/api/v1/me", &staff.other_worker).body["id"]
        .as_str()
        .unwrap()
        .to_string();

    let path = format!("/api/v1/cases/{case_id}/assignment");
    app.post(&path, &staff.worker, json!({"assignee": bolat}))
        .assert_problem(403, "forbidden");
    let res = app.post(&path, &staff.coordinator, json!({"assignee": "nobody"}));
    assert_eq!(res.error_pointers(), ["/assignee"]);
    let res = app.post(&path, &staff.coordinator, json!({"assignee": bolat}));
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["assigned_to"], bolat.as_str());
    // Now it is Bolat's: he reads it, Aigerim no longer does.
    assert_eq!(
        app.get(&format!("/api/v1/cases/{case_id}"), &staff.other_worker)
            .status,
        200
    );
    app.get(&format!("/api/v1/cases/{case_id}"), &staff.worker)
        .assert_problem(404, "not_found");

    let approvals = format!("/api/v1/cases/{case_id}/approvals");
    let res = app.post(
        &approvals,
        &staff.coordinator,
        json!({"subject": "no_such_plan", "decision": "approved"}),
    );
    assert_eq!(res.error_pointers(), ["/subject"]);
    // Nothing awaits a care plan approval on a case just referred.
    let res = app.post(
        &approvals,
        &staff.coordinator,
        json!({"subject": "care_plan", "decision": "approved", "note": "signed"}),
    );
    res.assert_problem(409, "conflict");
    let timeline = app.get(
        &format!("/api/v1/cases/{case_id}/timeline"),
        &staff.coordinator,
    );
    let names: Vec<&str> = timeline.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(!names.contains(&"care_plan_approved"), "{names:?}");
    assert_eq!(names.iter().filter(|n| **n == "case_assigned").count(), 2);
    // An assignment decided earlier is recorded when it happened.
    let res = app.post(
        &path,
        &staff.coordinator,
        json!({"assignee": bolat, "occurred_at": "yesterday"}),
    );
    assert_eq!(res.error_pointers(), ["/occurred_at"]);
}

/// The referral of `child_name`, born 14 May 2012, a girl.
fn referral_of(case_id: &str, child_name: &str) -> Value {
    build::referral(case_id)
        .received_at("2026-11-20T17:00:00+05:00")
        .immediate_risk()
        .child(child_name)
        .born("2012-05-14")
        .sex("female")
        .envelope()
}

fn closure(case_id: &str) -> Value {
    let mut data = fixture("kz.case_closure");
    data["closure"]["closure_date"] = json!("2026-11-22");
    form_envelope("kz.case_closure", case_id, data)
}

fn number_of(app: &TestApp, token: &str, case_id: &str) -> Value {
    app.get(&format!("/api/v1/cases/{case_id}"), token).body["number"].clone()
}

/// The open pair naming the child of `case_id` as the later one.
fn pair_for(app: &TestApp, token: &str, case_id: &str) -> Value {
    let list = app.get("/api/v1/children/duplicates", token);
    assert_eq!(list.status, 200, "{}", list.text);
    list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["child"]["cases"][0]["case_id"] == case_id)
        .unwrap_or_else(|| panic!("no pair for {case_id} in {:#}", list.body))
        .clone()
}

#[test]
fn readmissions_are_numbered_from_the_first_admission_once_a_coordinator_links_them() {
    let app = TestApp::spawn();
    let staff = staff(&app);
    let worker = phone(&app, &staff.worker);
    let manager = phone(&app, &staff.coordinator);

    // First admission, closed by the Manager.
    let first = uuid::Uuid::new_v4().to_string();
    assert_eq!(
        worker.send(&referral_of(&first, "Timur Aliyev")).status,
        201
    );
    assert_eq!(number_of(&app, &staff.coordinator, &first), "1");
    let res = manager.send(&closure(&first));
    assert_eq!(res.status, 201, "{}", res.text);
    let closed = app.get(&format!("/api/v1/cases/{first}"), &staff.coordinator);
    assert_eq!(closed.body["state"], "closed", "{:#}", closed.body);
    assert!(!closed.body["closed_at"].is_null());

    // The same child referred again: a new case, proposed as a duplicate
    // (names in another order, same birth date and sex), never merged
    // silently. Only coordinators see the list, and it shows no names.
    let second = uuid::Uuid::new_v4().to_string();
    assert_eq!(
        worker.send(&referral_of(&second, "ALIYEV  timur")).status,
        201
    );
    assert_eq!(number_of(&app, &staff.coordinator, &second), "2");
    app.get("/api/v1/children/duplicates", &staff.worker)
        .assert_problem(403, "forbidden");
    let listed = app.get("/api/v1/children/duplicates", &staff.coordinator);
    assert!(!listed.text.contains("Timur"), "{}", listed.text);
    let pair = pair_for(&app, &staff.coordinator, &second);
    assert_eq!(pair["other_child"]["cases"][0]["number"], "1");
    let reasons = pair["reasons"].as_array().unwrap();
    for reason in ["same_name", "same_date_of_birth", "same_sex"] {
        assert!(reasons.contains(&json!(reason)), "{reasons:?}");
    }

    // Linked: the earlier case is closed, so this is a readmission, 1.1.
    let link = format!(
        "/api/v1/children/duplicates/{}/link",
        pair["id"].as_str().unwrap()
    );
    let res = app.post(&link, &staff.coordinator, json!({}));
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["status"], "linked");
    app.post(&link, &staff.coordinator, json!({}))
        .assert_problem(409, "conflict");
    let readmitted = app.get(&format!("/api/v1/cases/{second}"), &staff.coordinator);
    assert_eq!(readmitted.body["number"], "1.1");
    assert_eq!(readmitted.body["admission"], 1);

    // Closed and referred once more: 1.2.
    assert_eq!(manager.send(&closure(&second)).status, 201);
    let third = uuid::Uuid::new_v4().to_string();
    assert_eq!(
        worker.send(&referral_of(&third, "Timur Aliyev")).status,
        201
    );
    let pair = pair_for(&app, &staff.coordinator, &third);
    let link = format!(
        "/api/v1/children/duplicates/{}/link",
        pair["id"].as_str().unwrap()
    );
    assert_eq!(app.post(&link, &staff.coordinator, json!({})).status, 200);
    assert_eq!(number_of(&app, &staff.coordinator, &third), "1.2");

    // A referral while the child's case is open joins that case.
    let open_case = uuid::Uuid::new_v4().to_string();
    assert_eq!(
        worker.send(&referral_of(&open_case, "Dana Omarova")).status,
        201
    );
    let again = uuid::Uuid::new_v4().to_string();
    assert_eq!(
        worker.send(&referral_of(&again, "Dana Omarova")).status,
        201
    );
    let pair = pair_for(&app, &staff.coordinator, &again);
    let link = format!(
        "/api/v1/children/duplicates/{}/link",
        pair["id"].as_str().unwrap()
    );
    assert_eq!(app.post(&link, &staff.coordinator, json!({})).status, 200);
    let merged = app.get(&format!("/api/v1/cases/{again}"), &staff.coordinator);
    assert_eq!(merged.body["merged_into"], open_case.as_str());
    let timeline = app.get(
        &format!("/api/v1/cases/{open_case}/timeline"),
        &staff.coordinator,
    );
    let referrals = timeline.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"] == "referral_received" && e["superseded"] == false)
        .count();
    assert_eq!(referrals, 2, "{:#}", timeline.body);
    let sync = app.get("/api/v1/sync", &staff.worker);
    assert!(!sync.body["cases"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["id"] == again.as_str()));

    // The form export shows each referral under its case's number as it is
    // now: renumbered readmissions, the merged referral under the open case
    // (an identifying export: a de-identified one names cases by pseudonyms).
    let export = app.get(
        "/api/v1/exports/forms/kz.referral.csv?identifying=true&legal_basis=required_by_law\
         &provision=Code%20on%20Marriage%20art.%2076&recipient=Almaty%20district%20court\
         &purpose=court%20report%20for%20case%201",
        &staff.coordinator,
    );
    assert_eq!(export.status, 200, "{}", export.text);
    let mut reader = csv::Reader::from_reader(export.text.as_bytes());
    let column = reader
        .headers()
        .unwrap()
        .iter()
        .position(|h| h == "case_number")
        .unwrap();
    let mut numbers: Vec<String> = reader
        .records()
        .map(|r| r.unwrap()[column].to_string())
        .collect();
    numbers.sort();
    let open_number = number_of(&app, &staff.coordinator, &open_case);
    let open_number = open_number.as_str().unwrap();
    let mut expected = vec!["1", "1.1", "1.2", open_number, open_number];
    expected.sort();
    assert_eq!(numbers, expected);

    // A different child with a similar name but another birth date and sex
    // is proposed only if two signs agree: here none is.
    let stranger = uuid::Uuid::new_v4().to_string();
    let mut env = referral(&stranger, "Dana Omarov");
    env["data"]["child"]["child_dob"] = json!("2015-01-01");
    env["data"]["child"]["child_sex"] = json!("male");
    assert_eq!(worker.send(&env).status, 201);
    let list = app.get("/api/v1/children/duplicates", &staff.coordinator);
    assert!(!list.text.contains(&stranger));

    // Siblings are separate cases in one family group.
    let res = app.post(
        &format!("/api/v1/cases/{stranger}/siblings"),
        &staff.coordinator,
        json!({"case_id": open_case}),
    );
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["siblings"][0]["case_id"], open_case.as_str());
    let other = app.get(&format!("/api/v1/cases/{open_case}"), &staff.coordinator);
    assert_eq!(other.body["family_group_id"], res.body["family_group_id"]);
}

#[test]
fn a_coordinator_dismisses_a_pair_that_is_two_children() {
    let app = TestApp::spawn();
    let staff = staff(&app);
    let worker = phone(&app, &staff.worker);
    let a = uuid::Uuid::new_v4().to_string();
    let b = uuid::Uuid::new_v4().to_string();
    assert_eq!(worker.send(&referral_of(&a, "Aruzhan Bekova")).status, 201);
    assert_eq!(worker.send(&referral_of(&b, "Aruzhan Bekova")).status, 201);
    let pair = pair_for(&app, &staff.coordinator, &b);
    let dismiss = format!(
        "/api/v1/children/duplicates/{}/dismiss",
        pair["id"].as_str().unwrap()
    );
    let res = app.post(&dismiss, &staff.coordinator, json!({}));
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["status"], "dismissed");
    let list = app.get("/api/v1/children/duplicates", &staff.coordinator);
    assert_eq!(list.body["items"], json!([]));
    assert_eq!(number_of(&app, &staff.coordinator, &b), "2");
    let dismissed = app.get(
        "/api/v1/children/duplicates?status=dismissed",
        &staff.coordinator,
    );
    assert_eq!(dismissed.body["items"].as_array().unwrap().len(), 1);
}

#[test]
fn the_morning_list_prints_in_the_terminal() {
    let app = TestApp::spawn();
    let staff = staff(&app);
    let case_id = uuid::Uuid::new_v4().to_string();
    assert_eq!(
        phone(&app, &staff.worker)
            .send(&referral(&case_id, "Child A"))
            .status,
        201
    );

    let out = app
        .shell()
        .args(["cases", "overdue", "--site", "KZ-CAM-ALA"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d7 = text
        .lines()
        .find(|l| l.contains("D7"))
        .unwrap_or_else(|| panic!("no D7 in {text}"));
    assert!(d7.starts_with("1 "), "{d7}");
    assert!(d7.contains("late") && d7.contains("aigerim"), "{d7}");
    // Due 48 h after Friday 17:00 in Almaty: shown in Almaty time, with its
    // offset (#15 item 5), and late by days and hours.
    assert!(d7.contains("2026-11-22 17:00 +05:00"), "{d7}");
    assert!(!d7.contains("0d late"), "{d7}");
    assert!(!text.contains("Child A"));

    let other = app
        .shell()
        .args(["cases", "overdue", "--site", "BT-NCWC"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&other.stdout).contains("nothing overdue"));
}

#[test]
fn an_admin_calendar_change_moves_open_working_day_deadlines() {
    let app = TestApp::spawn();
    let staff = staff(&app);
    let admin = staff.admin.clone();
    let worker = phone(&app, &staff.worker);
    let case_id = uuid::Uuid::new_v4().to_string();
    assert_eq!(worker.send(&referral(&case_id, "Child A")).status, 201);

    // The child's record, Monday 14 December 2026: age disputed, so the age
    // assessment is due within 5 working days (D11, 8.3.15(b)); Wednesday
    // 16 December is Independence Day.
    let mut data = fixture("kz.child");
    data["record"]["recorded_date"] = json!("2026-12-14");
    data["identity"]["age_disputed"] = json!(true);
    assert_eq!(
        worker
            .send(&form_envelope("kz.child", &case_id, data))
            .status,
        201
    );
    let due = |app: &TestApp| {
        let case = app.get(&format!("/api/v1/cases/{case_id}"), &staff.worker);
        deadline(&case.body, "D11")["due_at"].clone()
    };
    assert_eq!(due(&app), "2026-12-22T18:59:59Z");

    let calendar = app.get("/api/v1/programmes/kz/calendar", &staff.worker);
    assert_eq!(calendar.status, 200, "{}", calendar.text);
    assert_eq!(calendar.body["time_zone"], "Asia/Almaty");
    assert!(calendar.body["holidays"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h["date"] == "2026-12-16" && h["origin"] == "shipped"));

    // By decree the day becomes a working day: the open deadline moves.
    let day = "/api/v1/programmes/kz/calendar/days/2026-12-16";
    let change = json!({"kind": "working", "name": "moved by decree"});
    app.request("PUT", day, Some(&staff.coordinator), Some(&change))
        .assert_problem(403, "forbidden");
    let res = app.request("PUT", day, Some(&admin), Some(&change));
    assert_eq!(res.status, 200, "{}", res.text);
    assert!(!res.body["holidays"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h["date"] == "2026-12-16"));
    assert_eq!(due(&app), "2026-12-21T18:59:59Z");

    // A new holiday on Friday 18th pushes it a day; resetting both restores it.
    let res = app.request(
        "PUT",
        "/api/v1/programmes/kz/calendar/days/2026-12-18",
        Some(&admin),
        Some(&json!({"kind": "holiday", "name": "extra day off"})),
    );
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(due(&app), "2026-12-22T18:59:59Z");
    for d in ["2026-12-16", "2026-12-18"] {
        let path = format!("/api/v1/programmes/kz/calendar/days/{d}");
        assert_eq!(app.delete(&path, &admin).status, 200);
    }
    assert_eq!(due(&app), "2026-12-22T18:59:59Z");
    app.delete(day, &admin).assert_problem(404, "not_found");
    app.request(
        "PUT",
        "/api/v1/programmes/kz/calendar/days/16-12-2026",
        Some(&admin),
        Some(&json!({"kind": "holiday", "name": "x"})),
    )
    .assert_problem(400, "bad_request");
    app.get("/api/v1/programmes/xx/calendar", &admin)
        .assert_problem(404, "not_found");
}

#[test]
fn two_servers_opening_cases_at_once_never_share_a_number() {
    let app = TestApp::spawn();
    let other_server = app.another();
    let staff = staff(&app);
    let servers = [&app, &other_server];
    let numbers = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for (i, server) in servers.iter().enumerate() {
            for _ in 0..2 {
                let numbers = &numbers;
                let token = if i == 0 {
                    &staff.worker
                } else {
                    &staff.other_worker
                };
                s.spawn(move || {
                    let phone = phone(server, token);
                    for _ in 0..5 {
                        let id = uuid::Uuid::new_v4().to_string();
                        let res = phone.send(&referral(&id, "Child"));
                        assert_eq!(res.status, 201, "{}", res.text);
                        let number = number_of(server, token, &id);
                        numbers
                            .lock()
                            .unwrap()
                            .push(number.as_str().unwrap().to_string());
                    }
                });
            }
        }
    });
    let mut numbers: Vec<u32> = numbers
        .into_inner()
        .unwrap()
        .iter()
        .map(|n| n.parse().unwrap())
        .collect();
    numbers.sort();
    assert_eq!(numbers, (1..=20).collect::<Vec<u32>>());
}

#[test]
fn closure_waits_while_a_parent_is_charged_and_edits_leave_the_fold() {
    let app = TestApp::spawn();
    let staff = staff(&app);
    let worker = phone(&app, &staff.worker);
    let manager = phone(&app, &staff.coordinator);
    let case_id = uuid::Uuid::new_v4().to_string();
    let first = referral(&case_id, "Child A");
    assert_eq!(worker.send(&first).status, 201);

    // An edit of the referral (no immediate risk after all) replaces it in
    // the fold: the 48-hour rule gives way to the 72-hour one; the first
    // version stays in the history.
    let mut edit = referral(&case_id, "Child A");
    edit["data"]["receipt"]["immediate_risk"] = json!(false);
    edit["supersedes"] = first["instance_id"].clone();
    let res = worker.send(&edit);
    assert_eq!(res.status, 201, "{}", res.text);
    let case = app.get(&format!("/api/v1/cases/{case_id}"), &staff.worker);
    assert!(case.body["deadlines"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["rule"] != "D7"));
    assert_eq!(deadline(&case.body, "D8")["due_at"], "2026-11-23T12:00:00Z");
    let timeline = app.get(&format!("/api/v1/cases/{case_id}/timeline"), &staff.worker);
    let superseded: Vec<&Value> = timeline.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["superseded"] == true)
        .collect();
    assert_eq!(superseded.len(), 1);
    assert_eq!(superseded[0]["id"], first["instance_id"]);

    // Decision (a), but a parent is charged (8.5.6): the case may not close
    // until the criminal case ends with the parent not found responsible.
    let mut ia = fixture("kz.initial_assessment");
    ia["admin"]["assessment_completed_at"] = json!("2026-11-22T13:00:00+05:00");
    ia["admin"]["child_removed"] = json!(false);
    ia["admin"].as_object_mut().unwrap().remove("removal_at");
    ia["decision"]["ia_decision"] = json!("a_no_further_action");
    // No Social Worker is appointed for a social assessment under (a).
    ia["decision"]
        .as_object_mut()
        .unwrap()
        .remove("sa_sw_appointed_at");
    ia["decision"]["parent_charged"] = json!(true);
    let res = worker.send(&form_envelope("kz.initial_assessment", &case_id, ia));
    assert_eq!(res.status, 201, "{}", res.text);
    let state = |app: &TestApp| {
        app.get(&format!("/api/v1/cases/{case_id}"), &staff.coordinator)
            .body["state"]
            .clone()
    };
    assert_eq!(state(&app), "closing_pending_criminal");

    let closure_with = |status: &str, day: &str| {
        let mut env = closure(&case_id);
        env["data"]["closure"]["closure_date"] = json!(day);
        env["data"]["closure_guard"]["criminal_case_status"] = json!(status);
        env
    };
    let pending = closure_with("pending", "2026-11-25");
    let res = manager.send(&pending);
    assert_eq!(res.status, 201, "{}", res.text);
    assert_eq!(state(&app), "closing_pending_criminal");
    assert!(app
        .get(&format!("/api/v1/cases/{case_id}"), &staff.coordinator)
        .body["closed_at"]
        .is_null());

    let mut concluded = closure_with("concluded_not_responsible", "2026-12-10");
    concluded["supersedes"] = pending["instance_id"].clone();
    let res = manager.send(&concluded);
    assert_eq!(res.status, 201, "{}", res.text);
    assert_eq!(state(&app), "closed");
    // Closed: gone from the worker's phone.
    let sync = app.get("/api/v1/sync", &staff.worker);
    assert!(!sync.text.contains(&case_id));
}

#[test]
fn an_emergency_record_meets_its_deadlines_at_the_times_it_records() {
    let app = TestApp::spawn();
    let staff = staff(&app);
    let worker = phone(&app, &staff.worker);
    let case_id = uuid::Uuid::new_v4().to_string();
    assert_eq!(worker.send(&referral(&case_id, "Child A")).status, 201);
    // Danger reported at 22:40, removal found necessary at 01:20 (the
    // "reasonable cause" D4a/b count from, 8.2.2), the child removed at
    // 02:15 (D4c's start); the GTA told at 01:25 and the juvenile
    // inspection asked at 01:30 (within the 4 hours proposed for
    // "immediately"); the Prosecutor only at 09:00: late.
    let res = worker.send(&form_envelope(
        "kz.emergency_action",
        &case_id,
        fixture("kz.emergency_action"),
    ));
    assert_eq!(res.status, 201, "{}", res.text);
    let case = app
        .get(&format!("/api/v1/cases/{case_id}"), &staff.worker)
        .body;
    for (rule, due, status) in [
        ("D4a", "2026-03-03T00:20:00Z", "met_on_time"),
        ("D4b", "2026-03-03T00:20:00Z", "met_on_time"),
        ("D4c", "2026-03-03T01:15:00Z", "met_late"),
    ] {
        let d = deadline(&case, rule);
        assert_eq!(d["due_at"], due, "{rule}: {d:#}");
        assert_eq!(d["status"], status, "{rule}: {d:#}");
    }
    assert_eq!(deadline(&case, "D4c")["ended_at"], "2026-03-03T04:00:00Z");
}

/// #15 item 5: a site is named by its code or id, a user by username or
/// id, in every list filter and in an assignment; an unknown name is a 422
/// saying which, never an empty list that reads as "nothing overdue".
#[test]
fn sites_and_people_are_named_by_code_username_or_id() {
    let app = TestApp::spawn();
    let staff = staff(&app);
    let case_id = uuid::Uuid::new_v4().to_string();
    assert_eq!(
        phone(&app, &staff.worker)
            .send(&referral(&case_id, "Child A"))
            .status,
        201
    );
    let site_id = app.site_id(&staff.admin, "KZ-CAM-ALA");
    let aigerim = app.get("/api/v1/me", &staff.worker).body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let ids_of = |url: &str| -> Vec<String> {
        let res = app.get(url, &staff.coordinator);
        assert_eq!(res.status, 200, "{url}: {}", res.text);
        res.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                c["case_id"]
                    .as_str()
                    .or(c["id"].as_str())
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    for site in ["KZ-CAM-ALA", site_id.as_str()] {
        assert_eq!(
            ids_of(&format!("/api/v1/cases?site={site}")),
            vec![case_id.clone()]
        );
        assert!(
            ids_of(&format!("/api/v1/deadlines?status=overdue&site={site}")).contains(&case_id)
        );
    }
    for who in ["aigerim", aigerim.as_str()] {
        assert_eq!(
            ids_of(&format!("/api/v1/cases?assignee={who}")),
            vec![case_id.clone()]
        );
        assert!(
            ids_of(&format!("/api/v1/deadlines?status=overdue&assignee={who}")).contains(&case_id)
        );
    }
    // Somebody else's: an honest empty list.
    assert!(ids_of("/api/v1/cases?assignee=bolat").is_empty());
    for (url, pointer) in [
        ("/api/v1/cases?site=KZ-CAM-XXX", "/site"),
        ("/api/v1/deadlines?site=KZ-CAM-XXX", "/site"),
        ("/api/v1/cases?assignee=nobody", "/assignee"),
        (
            "/api/v1/deadlines?status=overdue&assignee=nobody",
            "/assignee",
        ),
        // An unknown programme or status is refused, not an empty list
        // (found by schemathesis: the OpenAPI document names the values).
        ("/api/v1/cases?programme=xx", "/programme"),
        ("/api/v1/deadlines?programme=xx", "/programme"),
        ("/api/v1/children/duplicates?status=merged", "/status"),
    ] {
        let res = app.get(url, &staff.coordinator);
        let problem = res.assert_problem(422, "validation");
        assert!(
            problem["detail"].as_str().unwrap().starts_with(pointer),
            "{url}: {problem:#}"
        );
    }

    // Assigned by username: the case stores the user's id.
    let res = app.post(
        &format!("/api/v1/cases/{case_id}/assignment"),
        &staff.coordinator,
        json!({ "assignee": "bolat" }),
    );
    assert_eq!(res.status, 200, "{}", res.text);
    let bolat = app.get("/api/v1/me", &staff.other_worker).body["id"].clone();
    assert_eq!(res.body["assigned_to"], bolat);
    app.post(
        &format!("/api/v1/cases/{case_id}/assignment"),
        &staff.coordinator,
        json!({ "assignee": "nobody" }),
    )
    .assert_problem(422, "validation");

    // A new user's sites by code; the user's site list holds ids.
    let res = app.post(
        "/api/v1/users",
        &staff.admin,
        json!({ "username": "dana", "role": "field_worker", "site_ids": ["KZ-CAM-ALA"] }),
    );
    assert_eq!(res.status, 201, "{}", res.text);
    assert_eq!(res.body["user"]["site_ids"], json!([site_id]));
    let res = app.post(
        "/api/v1/users",
        &staff.admin,
        json!({ "username": "erlan", "role": "field_worker", "site_ids": ["KZ-CAM-XXX"] }),
    );
    let problem = res.assert_problem(422, "validation");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .starts_with("/site_ids/0"),
        "{problem:#}"
    );

    // The audit log's actor by username or id; an unknown one is 422.
    let manager = app.get("/api/v1/me", &staff.coordinator).body["id"].clone();
    for who in ["manager", manager.as_str().unwrap()] {
        let res = app.get(&format!("/api/v1/audit?actor={who}"), &staff.admin);
        assert_eq!(res.status, 200, "{}", res.text);
        let rows = res.body["items"].as_array().unwrap();
        assert!(
            rows.iter().any(|r| r["action"] == "case_assigned"),
            "the manager assigned the case: {rows:#?}"
        );
        assert!(rows.iter().all(|r| r["actor_id"] == manager), "{rows:#?}");
    }
    app.get("/api/v1/audit?actor=nobody", &staff.admin)
        .assert_problem(422, "validation");
}

/// #15 item 5: times carry their zone; a deadline shows the programme's
/// local time beside UTC.
#[test]
fn times_carry_their_zone_and_deadlines_their_local_time() {
    let app = TestApp::spawn();
    let staff = staff(&app);
    let case_id = uuid::Uuid::new_v4().to_string();
    let worker = phone(&app, &staff.worker);
    assert_eq!(worker.send(&referral(&case_id, "Child A")).status, 201);
    let case = app.get(&format!("/api/v1/cases/{case_id}"), &staff.coordinator);
    // D7: 48 h from Friday 20 November 17:00 in Almaty.
    let d7 = deadline(&case.body, "D7");
    assert_eq!(d7["due_at"], "2026-11-22T12:00:00Z");
    assert_eq!(d7["due_local"], "2026-11-22T17:00:00+05:00");
    let sync = app.get("/api/v1/sync", &staff.worker);
    assert_eq!(sync.status, 200, "{}", sync.text);
    let mine = sync.body["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == case_id.as_str())
        .unwrap();
    let next = mine["next_deadlines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["rule"] == "D7")
        .unwrap();
    assert_eq!(next["due_at"], "2026-11-22T12:00:00Z");
    assert_eq!(next["due_local"], "2026-11-22T17:00:00+05:00");
    // Every time-looking string of the sync answer and the case ends in a
    // zone (Z or an offset), or is a date.
    fn check(v: &Value, at: &str) {
        match v {
            // A date and a time (not a token that has a T at the tenth
            // place: one in 64 random tokens has).
            Value::String(s)
                if s.len() >= 19
                    && s.as_bytes()[10] == b'T'
                    && s.is_char_boundary(10)
                    && chrono::NaiveDate::parse_from_str(&s[..10], "%Y-%m-%d").is_ok() =>
            {
                let zoned = s.ends_with('Z') || s[19..].contains(['+', '-']);
                assert!(zoned, "{at}: {s} has no zone");
            }
            Value::Array(items) => items.iter().for_each(|i| check(i, at)),
            Value::Object(map) => map.iter().for_each(|(k, i)| check(i, &format!("{at}/{k}"))),
            _ => {}
        }
    }
    check(&sync.body, "sync");
    check(&case.body, "case");
    let tokens = app.get("/api/v1/tokens", &staff.admin);
    check(&tokens.body, "tokens");
    let login = app.login("aigerim", common::USER_PASSWORD);
    assert_eq!(login.status, 201, "{}", login.text);
    assert!(login.body["expires_at"].as_str().unwrap().ends_with('Z'));
    check(&login.body, "session");
}

/// #15 item 5: the administration commands never make a database; run in
/// the wrong directory they say where they looked and how to point them at
/// the server. What they export is audited as the operating-system user.
#[test]
fn the_shell_needs_the_servers_database_and_audits_its_user() {
    let app = TestApp::spawn();
    let elsewhere = tempfile::tempdir().unwrap();
    let mut wrong = common::bin::command(elsewhere.path(), &app.shared.db);
    wrong
        .env_remove("CASESYNC_DATABASE_URL")
        .env_remove("CASESYNC_DATA_DIR");
    let out = wrong.args(["users", "list"]).output().unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("no casesync database")
            && said.contains(
                &elsewhere
                    .path()
                    .join("data")
                    .join("casesync.db")
                    .display()
                    .to_string()
            )
            && said.contains("--data-dir")
            && said.contains("--config"),
        "{said}"
    );
    assert!(!elsewhere.path().join("data").exists(), "nothing created");

    // On PostgreSQL the shell finds the database from anywhere, but not the
    // key-encryption key its programme keys are sealed under: it refuses
    // before making a new one that would open none of them.
    if app.shared.db.is_postgres() {
        let stray = tempfile::tempdir().unwrap();
        let out = common::bin::command(stray.path(), &app.shared.db)
            .env_remove("CASESYNC_DATA_DIR")
            .args(["users", "list"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            said.contains("master.key is missing") && said.contains("--data-dir"),
            "{said}"
        );
        let made = stray.path().join("data").join("master.key");
        assert!(!made.exists(), "no key made");
    }

    // Pointed at the server's directory, it works: the database (SQLite)
    // and the keys (the audit chain's key, on PostgreSQL too) are there.
    let mut right = common::bin::command(elsewhere.path(), &app.shared.db);
    right.arg("--data-dir").arg(app.data_dir());
    let out = right
        .env("USER", "alice")
        .args(["audit", "export", "--out"])
        .arg(elsewhere.path().join("audit.csv"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let actors: Vec<Option<String>> = audit_log::table
        .filter(audit_log::action.eq("audit_exported"))
        .select(audit_log::actor_id)
        .load(&mut app.conn())
        .unwrap();
    assert_eq!(actors, [Some("os:alice".to_string())]);
}

#[test]
fn the_case_list_sorts_oldest_newest_or_by_the_next_deadline_a_page_at_a_time() {
    let app = TestApp::spawn();
    let staff = staff(&app);
    let phone = phone(&app, &staff.worker);
    // Opened in the order a, b, c; due (24 hours after each referral) in
    // the order b, c, a; d is closed and due for nothing.
    let ids: Vec<String> = (0..4).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    for (id, received) in ids.iter().zip([
        "2026-11-22T09:00:00+05:00",
        "2026-11-20T09:00:00+05:00",
        "2026-11-21T09:00:00+05:00",
        "2026-11-19T09:00:00+05:00",
    ]) {
        let referral = build::referral(id)
            .received_at(received)
            .immediate_risk()
            .child("Child")
            .envelope();
        assert_eq!(phone.send(&referral).status, 201);
    }
    let closed = phone.send(&closure(&ids[3]));
    assert_eq!(closed.status, 201, "{}", closed.text);
    let walk = |sort: &str| -> Vec<String> {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/api/v1/cases?include_closed=true&limit=1&sort={sort}");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page = app.get(&path, &staff.coordinator);
            assert_eq!(page.status, 200, "{}", page.text);
            seen.extend(
                page.body["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c["id"].as_str().unwrap().to_string()),
            );
            match page.body["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_string()),
                None => return seen,
            }
        }
    };
    let [a, b, c, d] = [&ids[0], &ids[1], &ids[2], &ids[3]].map(String::clone);
    assert_eq!(walk("oldest"), [a.clone(), b.clone(), c.clone(), d.clone()]);
    assert_eq!(walk("newest"), [d.clone(), c.clone(), b.clone(), a.clone()]);
    assert_eq!(
        walk("due"),
        [b, c, a, d],
        "the closed case, due for nothing, last"
    );

    // A cursor is for the order it was made in.
    let first = app.get("/api/v1/cases?limit=1&sort=newest", &staff.coordinator);
    let cursor = first.body["next_cursor"].as_str().unwrap();
    app.get(
        &format!("/api/v1/cases?limit=1&sort=due&cursor={cursor}"),
        &staff.coordinator,
    )
    .assert_problem(400, "bad_request");
    let res = app.get("/api/v1/cases?sort=alphabetical", &staff.coordinator);
    assert_eq!(res.status, 400, "{}", res.text);
}

/// #18 ("every console page < 100 ms p99 on a database of 100,000
/// cases"): the list is read one site at a time, each from an index in the
/// page's order, and merged. Every sort still pages through the same cases
/// in the same order as one sort of them all, for a coordinator of two
/// sites, whatever the page size, filtered or not.
#[test]
fn the_case_list_of_two_sites_pages_in_one_order_for_every_sort() {
    use casesync::db::schema::cases;
    let app = TestApp::spawn();
    let staff = staff(&app);
    let (_, dana) = app.user(&staff.admin, "dana", "field_worker", &["KZ-CAM-SHY"]);
    let (_, both) = app.user(
        &staff.admin,
        "both",
        "coordinator",
        &["KZ-CAM-ALA", "KZ-CAM-SHY"],
    );
    let almaty = phone(&app, &staff.worker);
    let shymkent = phone(&app, &dana);
    let mut ids = Vec::new();
    for i in 0..7 {
        let id = uuid::Uuid::new_v4().to_string();
        let mut referral = build::referral(&id)
            .received_at(&format!("2026-11-{:02}T09:00:00+05:00", 10 + (i * 5) % 7))
            .child("Child");
        if i % 3 != 0 {
            referral = referral.immediate_risk();
        }
        let sent = if i % 2 == 0 { &almaty } else { &shymkent }.send(&referral.envelope());
        assert_eq!(sent.status, 201, "{}", sent.text);
        ids.push(id);
    }
    let closed = almaty.send(&closure(&ids[0]));
    assert_eq!(closed.status, 201, "{}", closed.text);

    type Row = (
        String,
        chrono::NaiveDateTime,
        Option<chrono::NaiveDateTime>,
        Option<chrono::NaiveDateTime>,
    );
    let rows: Vec<Row> = cases::table
        .select((
            cases::id,
            cases::created_at,
            cases::next_due_at,
            cases::closed_at,
        ))
        .load(&mut app.conn())
        .unwrap();
    assert_eq!(rows.len(), 7);
    let now = chrono::Utc::now().naive_utc();
    let expected = |sort: &str, overdue: bool, include_closed: bool| -> Vec<String> {
        let mut wanted: Vec<&Row> = rows
            .iter()
            .filter(|r| include_closed || r.3.is_none())
            .filter(|r| !overdue || r.2.is_some_and(|t| t < now))
            .collect();
        match sort {
            "due" => wanted.sort_by_key(|r| (r.2.is_none(), r.2, r.0.clone())),
            _ => wanted.sort_by_key(|r| (r.1, r.0.clone())),
        }
        if sort == "newest" {
            wanted.reverse();
        }
        wanted.into_iter().map(|r| r.0.clone()).collect()
    };
    let walk = |query: &str, limit: usize| -> Vec<String> {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/api/v1/cases?limit={limit}&{query}");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page = app.get(&path, &both);
            assert_eq!(page.status, 200, "{}", page.text);
            let items = page.body["items"].as_array().unwrap();
            assert!(items.len() <= limit);
            seen.extend(items.iter().map(|c| c["id"].as_str().unwrap().to_string()));
            match page.body["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_string()),
                None => return seen,
            }
        }
    };
    for sort in ["oldest", "newest", "due"] {
        for (filter, overdue, include_closed) in [
            ("include_closed=true", false, true),
            ("", false, false),
            ("overdue=true", true, false),
        ] {
            let want = expected(sort, overdue, include_closed);
            assert!(!want.is_empty());
            for limit in [1, 2, 3, 100] {
                assert_eq!(
                    walk(&format!("sort={sort}&{filter}"), limit),
                    want,
                    "sort={sort} {filter} limit={limit}"
                );
            }
        }
    }
    // One site of the two: its cases only, in the same order.
    let shy: Vec<String> = expected("due", false, false)
        .into_iter()
        .filter(|id| ids.iter().position(|i| i == id).unwrap() % 2 == 1)
        .collect();
    assert_eq!(walk("sort=due&site=KZ-CAM-SHY", 2), shy);
    // Each worker sees their own site's cases, in order.
    let mine = app.get("/api/v1/cases?sort=due&limit=2", &dana);
    assert_eq!(
        mine.body["items"][0]["id"],
        shy[0].as_str(),
        "{}",
        mine.text
    );
    // Everyone works on their cases: none needs an assignee.
    assert!(walk("needs_assignee=true", 2).is_empty());
    assert_eq!(
        walk("needs_assignee=false&sort=newest", 2),
        expected("newest", false, false)
    );
}
