//! The case page's actions over plain HTTP (issue #18, page 4): conflicts
//! resolved, approvals decided, possible duplicates linked or dismissed and
//! siblings linked from the page, each through the API's own function and
//! audit row; the privacy lists each role may read. (The page's read and
//! assignment are tests/it/console.rs.)

use crate::common;
use crate::console::Browser;

use common::build;
use common::phone::phone;
use common::TestApp;
use serde_json::{json, Value};

fn referral(case_id: &str, child: &str) -> Value {
    build::referral(case_id)
        .received_at("2026-11-20T17:00:00+05:00")
        .immediate_risk()
        .child(child)
        .born("2012-05-14")
        .sex("female")
        .envelope()
}

#[test]
fn a_coordinator_resolves_a_conflict_on_the_case_page_and_a_worker_only_sees_it() {
    let app = TestApp::spawn();
    let staff = app.staff().other_worker().build();
    let worker_phone = phone(&app, &staff.worker);
    let coordinator_phone = phone(&app, &staff.coordinator);
    let case_id = uuid::Uuid::new_v4().to_string();
    assert_eq!(
        worker_phone.send(&referral(&case_id, "Child A")).status,
        201
    );
    let base = app.case(&staff.worker, &case_id)["version"]
        .as_i64()
        .unwrap();
    // Two offline edits of the child's sex from the same case version.
    let child_record = |sex: &str, day: &str| build::offline_child_record(&case_id, base, sex, day);
    assert_eq!(
        worker_phone
            .send(&child_record("male", "2026-11-21"))
            .status,
        201
    );
    assert_eq!(
        coordinator_phone
            .send(&child_record("female", "2026-11-22"))
            .status,
        201
    );

    let mut worker = Browser::with_session(&app, &staff.worker);
    let seen = worker.get(&format!("/cases/{case_id}"));
    assert_eq!(seen.status, 200, "{}", seen.text);
    assert!(
        seen.text.contains("child.sex"),
        "the worker sees the conflict"
    );
    assert!(
        !seen.text.contains("/resolution"),
        "but only coordinators resolve"
    );

    let mut coordinator = Browser::with_session(&app, &staff.coordinator);
    let page = coordinator.get(&format!("/cases/{case_id}"));
    assert!(page.text.contains("Conflicts"));
    let action = page
        .text
        .split("action=\"/conflicts/")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a resolve form")
        .to_string();
    let path = format!("/conflicts/{action}");
    let csrf = Browser::hidden(&page, "csrf");

    // Without the form's CSRF value: refused, nothing resolved.
    let forged = coordinator.post(&path, &[("csrf", "nope"), ("choice", "other")]);
    assert_eq!(forged.status, 403);
    // A choice that is not one: the API's refusal, said on the page.
    let bad = coordinator.post(&path, &[("csrf", &csrf), ("choice", "maybe")]);
    assert_eq!(bad.status, 422, "{}", bad.text);
    assert!(bad.text.contains("choice"), "{}", bad.text);
    assert_eq!(app.audit_count("conflict_resolved"), 0);
    // The worker may not resolve, even with a form of their own session.
    let worker_csrf = Browser::hidden(&seen, "csrf");
    let refused = worker.post(&path, &[("csrf", &worker_csrf), ("choice", "other")]);
    assert_eq!(refused.status, 403, "{}", refused.text);

    let done = coordinator.post(
        &path,
        &[
            ("csrf", &csrf),
            ("choice", "value"),
            ("value", "female"),
            ("note", "checked the birth certificate"),
        ],
    );
    assert_eq!(done.status, 303, "{}", done.text);
    let after = coordinator.get(done.header("location").unwrap());
    assert!(after.text.contains("The conflict is resolved."));
    assert!(
        !after.text.contains("action=\"/conflicts/"),
        "nothing left to resolve"
    );
    assert_eq!(app.audit_count("conflict_resolved"), 1);
    let conflicts = app.get("/api/v1/conflicts?all=true", &staff.coordinator);
    let resolved: Vec<&Value> = conflicts.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["id"] == action.trim_end_matches("/resolution"))
        .collect();
    assert_eq!(resolved[0]["status"], "resolved");
    assert_eq!(app.case(&staff.coordinator, &case_id)["open_conflicts"], 0);
}

#[test]
fn possible_duplicates_and_siblings_are_decided_on_the_case_page() {
    let app = TestApp::spawn();
    let staff = app.staff().other_worker().build();
    let phone = phone(&app, &staff.worker);
    let (first, second, sister) = (
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
    );
    // The same child referred twice, and her sister.
    assert_eq!(
        phone.send(&referral(&first, "Aruzhan Sarsenova")).status,
        201
    );
    assert_eq!(
        phone.send(&referral(&second, "Aruzhan Sarsenova")).status,
        201
    );
    let mut sister_referral = referral(&sister, "Dana Sarsenova");
    sister_referral["data"]["child"]["child_dob"] = json!("2015-02-01");
    assert_eq!(phone.send(&sister_referral).status, 201, "the sister");
    let number = |id: &str| {
        app.case(&staff.coordinator, id)["number"]
            .as_str()
            .unwrap()
            .to_string()
    };

    let mut coordinator = Browser::with_session(&app, &staff.coordinator);
    let page = coordinator.get(&format!("/cases/{second}"));
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(
        page.text.contains("Possibly the same child"),
        "{}",
        page.text
    );
    assert!(
        page.text.contains(&number(&first)),
        "the other case, by number"
    );
    let csrf = Browser::hidden(&page, "csrf");
    let pair = page
        .text
        .split("action=\"/children/duplicates/")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .expect("a decision form")
        .to_string();

    // A worker's page offers no decision, and the route refuses one.
    let mut worker = Browser::with_session(&app, &staff.worker);
    let theirs = worker.get(&format!("/cases/{second}"));
    assert!(!theirs.text.contains("Possibly the same child"));
    let refused = worker.post(
        &format!("/children/duplicates/{pair}/dismiss"),
        &[
            ("csrf", &Browser::hidden(&theirs, "csrf")),
            ("case", &second),
        ],
    );
    assert_eq!(refused.status, 403, "{}", refused.text);

    let dismissed = coordinator.post(
        &format!("/children/duplicates/{pair}/dismiss"),
        &[("csrf", &csrf), ("case", &second)],
    );
    assert_eq!(dismissed.status, 303, "{}", dismissed.text);
    assert_eq!(
        dismissed.header("location").unwrap(),
        format!("/cases/{second}?done=dismissed")
    );
    let after = coordinator.get(&format!("/cases/{second}?done=dismissed"));
    assert!(after.text.contains("Recorded as two children."));
    assert!(!after.text.contains("Possibly the same child"));
    assert_eq!(app.audit_count("duplicate_dismissed"), 1);
    // Deciding again is the API's 409, on the page.
    let again = coordinator.post(
        &format!("/children/duplicates/{pair}/link"),
        &[("csrf", &csrf), ("case", &second)],
    );
    assert_eq!(again.status, 409, "{}", again.text);
    assert!(again.text.contains("already dismissed"), "{}", again.text);

    // The sister's case, named by its number.
    let unknown = coordinator.post(
        &format!("/cases/{second}/siblings"),
        &[("csrf", &csrf), ("number", "no-such-number")],
    );
    assert_eq!(unknown.status, 422, "{}", unknown.text);
    assert!(unknown.text.contains("no such case at this site"));
    let linked = coordinator.post(
        &format!("/cases/{second}/siblings"),
        &[("csrf", &csrf), ("number", &number(&sister))],
    );
    assert_eq!(linked.status, 303, "{}", linked.text);
    let after = coordinator.get(linked.header("location").unwrap());
    assert!(after.text.contains("The siblings are linked."));
    assert!(after.text.contains(&format!("/cases/{sister}")));
    assert_eq!(app.audit_count("siblings_linked"), 1);
    let siblings = &app.case(&staff.coordinator, &sister)["siblings"];
    assert_eq!(siblings[0]["case_id"], second.as_str());
}

#[test]
fn approvals_are_offered_only_when_awaited_and_a_decision_out_of_turn_says_why() {
    let app = TestApp::spawn();
    let staff = app.staff().build();
    let case_id = uuid::Uuid::new_v4().to_string();
    assert_eq!(
        phone(&app, &staff.worker)
            .send(&referral(&case_id, "Child A"))
            .status,
        201
    );
    let mut coordinator = Browser::with_session(&app, &staff.coordinator);
    let page = coordinator.get(&format!("/cases/{case_id}"));
    assert!(
        !page.text.contains("Awaiting your decision"),
        "a case just referred awaits no approval"
    );
    let csrf = Browser::hidden(&page, "csrf");
    let out_of_turn = coordinator.post(
        &format!("/cases/{case_id}/approvals"),
        &[
            ("csrf", &csrf),
            ("subject", "care_plan"),
            ("decision", "approved"),
            ("note", ""),
        ],
    );
    assert_eq!(out_of_turn.status, 409, "{}", out_of_turn.text);
    assert!(
        out_of_turn
            .text
            .contains("not awaiting a care_plan decision"),
        "{}",
        out_of_turn.text
    );
    assert_eq!(app.audit_count("case_approval"), 0);
}

#[test]
fn the_privacy_lists_are_shown_to_the_roles_the_api_shows_them_to() {
    let app = TestApp::spawn();
    let staff = app.staff().build();
    let case_id = uuid::Uuid::new_v4().to_string();
    assert_eq!(
        phone(&app, &staff.worker)
            .send(&referral(&case_id, "Child A"))
            .status,
        201
    );
    let consent = app.post(
        &format!("/api/v1/cases/{case_id}/consents"),
        &staff.coordinator,
        json!({
            "subject": "parent", "kind": "consent", "medium": "written",
            "scopes": ["disclose"], "given_on": "2026-11-21",
            "recipient": "Almaty City Hospital No. 2"
        }),
    );
    assert_eq!(consent.status, 201, "{}", consent.text);

    let before = app.audit_count("case_read");
    let coordinator =
        Browser::with_session(&app, &staff.coordinator).get(&format!("/cases/{case_id}"));
    assert!(
        coordinator.text.contains("Almaty City Hospital No. 2"),
        "the consent"
    );
    assert!(coordinator.text.contains("Disclosures"));
    assert!(coordinator.text.contains("Emergency access"));
    assert!(coordinator.text.contains("Requests for the case file"));
    assert_eq!(
        app.audit_count("case_read"),
        before + 1,
        "one row for the page"
    );

    let worker = Browser::with_session(&app, &staff.worker).get(&format!("/cases/{case_id}"));
    assert_eq!(worker.status, 200);
    assert!(
        worker.text.contains("Almaty City Hospital No. 2"),
        "their case's consents"
    );
    assert!(
        !worker.text.contains("Disclosures") && !worker.text.contains("Emergency access"),
        "the disclosure log and break-glass grants are the coordinator's"
    );
}
