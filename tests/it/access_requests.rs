//! Access to the case file by the child and parents (KZ 10.5, A2/A3) and
//! the family's copy of meeting minutes (8.7.22(d), P8), over real HTTP:
//! a request is recorded, the Manager approves it with redactions or
//! refuses it, an approved request gives a redacted copy without the
//! professional discussion of minutes, and every copy is on the audit log.

use crate::common;

use casesync::db::schema::audit_log;
use common::build::{submit, Staff};
use common::phone::{fixture, form_envelope, phone, Phone};
use common::{Response, TestApp};
use diesel::prelude::*;
use serde_json::{json, Value};

fn staff(app: &TestApp) -> Staff {
    app.staff().other_worker().elsewhere().analyst().build()
}

/// A case with a referral, the child protection meeting's minutes and the
/// independent supporter's appointment: (case id, referral, minutes, IS).
fn case_with_minutes(phone: &Phone) -> (String, String, String, String) {
    let case_id = uuid::Uuid::new_v4().to_string();
    let referral = submit(phone, "kz.referral", &case_id, fixture("kz.referral"));
    let minutes = submit(phone, "kz.cp_meeting", &case_id, fixture("kz.cp_meeting"));
    let supporter = submit(
        phone,
        "kz.independent_supporter",
        &case_id,
        fixture("kz.independent_supporter"),
    );
    (case_id, referral, minutes, supporter)
}

fn record(app: &TestApp, token: &str, case_id: &str, requester: &str) -> Response {
    app.post(
        &format!("/api/v1/cases/{case_id}/access-requests"),
        token,
        json!({ "requester": requester, "received_on": "2026-03-25" }),
    )
}

fn recorded(app: &TestApp, token: &str, case_id: &str, requester: &str) -> String {
    let res = record(app, token, case_id, requester);
    assert_eq!(res.status, 201, "{}", res.text);
    assert_eq!(res.body["status"], "pending");
    assert_eq!(res.body["requester"], requester);
    res.body["id"].as_str().unwrap().to_string()
}

fn review(app: &TestApp, token: &str, request_id: &str, body: Value) -> Response {
    app.post(
        &format!("/api/v1/access-requests/{request_id}/review"),
        token,
        body,
    )
}

fn copy(app: &TestApp, token: &str, request_id: &str) -> Response {
    app.get(&format!("/api/v1/access-requests/{request_id}/copy"), token)
}

fn audited(app: &TestApp, action: &str, object_id: &str) -> Vec<Option<String>> {
    audit_log::table
        .filter(audit_log::action.eq(action))
        .filter(audit_log::object_id.eq(object_id))
        .select(audit_log::detail)
        .load(&mut app.conn())
        .unwrap()
}

fn copied<'a>(copy: &'a Value, instance_id: &str) -> Option<&'a Value> {
    copy["submissions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["instance_id"] == instance_id)
}

const REASONING: &str = "The child asked to see her file; nothing in it puts her at risk.";

#[test]
fn a_childs_approved_request_gives_a_redacted_copy_without_the_professional_discussion() {
    let app = TestApp::spawn();
    let staff = staff(&app);
    let phone = phone(&app, &staff.worker);
    let (case_id, referral, minutes, supporter) = case_with_minutes(&phone);

    let request = recorded(&app, &staff.worker, &case_id, "child");
    // Nothing to give before the Manager has reviewed it.
    copy(&app, &staff.worker, &request).assert_problem(409, "conflict");

    // Each redaction must name a value of one of the case's submissions.
    let res = review(
        &app,
        &staff.coordinator,
        &request,
        json!({
            "decision": "approved",
            "redactions": [
                {"instance_id": referral, "pointer": "/parents_legal_reps/0/no_such_field", "reason": "x"},
                {"instance_id": uuid::Uuid::new_v4().to_string(), "pointer": "/child", "reason": "x"},
                {"instance_id": referral, "pointer": "/child/child_name", "reason": " "}
            ]
        }),
    );
    res.assert_problem(422, "validation");
    assert_eq!(
        res.error_pointers(),
        [
            "/redactions/0/pointer",
            "/redactions/1/instance_id",
            "/redactions/2/reason"
        ]
    );

    // What the child said about her mother's whereabouts is withheld.
    let res = review(
        &app,
        &staff.coordinator,
        &request,
        json!({
            "decision": "approved",
            "redactions": [{
                "instance_id": referral,
                "pointer": "/parents_legal_reps/0/address",
                "reason": "Could put the mother at risk (10.5)."
            }]
        }),
    );
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["status"], "approved");
    assert!(res.body["reviewed_at"].is_string());
    assert_eq!(
        res.body["redactions"][0]["pointer"],
        "/parents_legal_reps/0/address"
    );
    // A decision is taken once.
    review(
        &app,
        &staff.coordinator,
        &request,
        json!({"decision": "refused", "best_interests_reasoning": REASONING}),
    )
    .assert_problem(409, "conflict");

    // An edit of the referral after the review: the copy is of the file the
    // Manager reviewed, so the edit (not reviewed) stays out of it.
    let mut edited = fixture("kz.referral");
    edited["parents_legal_reps"][0]["address"] = json!("Moved to Kazan, 5 Lenin St");
    let mut envelope = form_envelope("kz.referral", &case_id, edited);
    envelope["supersedes"] = json!(referral);
    let res = phone.send(&envelope);
    assert_eq!(res.status, 201, "{}", res.text);
    let edit_id = envelope["instance_id"].as_str().unwrap();

    let res = copy(&app, &staff.worker, &request);
    assert_eq!(res.status, 200, "{}", res.text);
    let body = &res.body;
    assert_eq!(body["case"]["number"], "1");
    assert_eq!(body["requester"], "child");
    assert!(copied(body, edit_id).is_none(), "{body:#}");

    // The redacted value is gone; everything else of the referral is there.
    let original = fixture("kz.referral");
    let data = &copied(body, &referral).expect("the referral")["data"];
    assert_eq!(data["parents_legal_reps"][0]["address"], "[redacted]");
    assert_eq!(
        data["parents_legal_reps"][0]["name"],
        original["parents_legal_reps"][0]["name"]
    );
    assert_eq!(data["child"], original["child"]);
    assert_eq!(data["referrer"], original["referrer"]);
    assert!(!res.text.contains("Works in the Russian Federation"));
    assert!(!res.text.contains("Kazan"));

    // The minutes lose their professional discussion (P8) and keep the rest.
    let original = fixture("kz.cp_meeting");
    let copied_minutes = copied(body, &minutes).expect("the minutes");
    assert_eq!(
        copied_minutes["withheld_sections"],
        json!(["professional_discussion"])
    );
    assert!(copied_minutes["data"]
        .get("professional_discussion")
        .is_none());
    assert!(!res.text.contains("has been charged"));
    for section in ["meeting", "views", "findings", "recommendations", "minutes"] {
        assert_eq!(
            copied_minutes["data"][section], original[section],
            "{section}"
        );
    }

    // The independent supporter's appointment is the centre's record, not
    // the IS's notes (P11): it stays, whole.
    let is = copied(body, &supporter).expect("the IS appointment");
    assert_eq!(is["data"], fixture("kz.independent_supporter"));
    assert_eq!(is["withheld_sections"], json!([]));

    // The timeline: the events of what the copy holds, without facts.
    let events = body["timeline"].as_array().unwrap();
    assert!(events
        .iter()
        .any(|e| e["name"] == "referral_received" && e["instance_id"] == referral.as_str()));
    assert!(events.iter().any(|e| e["name"] == "cp_meeting_held"));
    assert!(events.iter().all(|e| e.get("facts").is_none()));
    assert!(!events.iter().any(|e| e["instance_id"] == edit_id));

    // Audited, by request; the copy itself is not stored anywhere.
    let rows = audited(&app, "access_copy_produced", &request);
    assert_eq!(rows.len(), 1);
    assert!(
        rows[0].as_deref().unwrap().contains("1 values redacted"),
        "{rows:?}"
    );
    let list = app.get(
        &format!("/api/v1/cases/{case_id}/access-requests"),
        &staff.coordinator,
    );
    assert_eq!(list.status, 200, "{}", list.text);
    assert_eq!(list.body["items"][0]["id"], request.as_str());
    assert!(list.body["items"][0]["copy_produced_at"].is_string());

    // A second copy is a second production, audited too.
    assert_eq!(copy(&app, &staff.coordinator, &request).status, 200);
    assert_eq!(audited(&app, "access_copy_produced", &request).len(), 2);
}

#[test]
fn a_parent_gets_access_only_with_best_interests_reasoning() {
    let app = TestApp::spawn();
    let staff = staff(&app);
    let phone = phone(&app, &staff.worker);
    let (case_id, ..) = case_with_minutes(&phone);

    let res = record(&app, &staff.worker, &case_id, "uncle");
    res.assert_problem(422, "validation");
    assert_eq!(res.error_pointers(), ["/requester"]);

    let request = recorded(&app, &staff.worker, &case_id, "parent");
    let res = review(
        &app,
        &staff.coordinator,
        &request,
        json!({"decision": "approved"}),
    );
    res.assert_problem(422, "validation");
    assert_eq!(res.error_pointers(), ["/best_interests_reasoning"]);
    let res = review(
        &app,
        &staff.coordinator,
        &request,
        json!({"decision": "approved", "best_interests_reasoning": "ok"}),
    );
    assert_eq!(res.error_pointers(), ["/best_interests_reasoning"]);

    let reasoning = "Reunification is planned; the mother needs to know the plan.";
    let res = review(
        &app,
        &staff.coordinator,
        &request,
        json!({"decision": "approved", "best_interests_reasoning": reasoning}),
    );
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["best_interests_reasoning"], reasoning);
    let res = copy(&app, &staff.coordinator, &request);
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["requester"], "parent");
    assert_eq!(audited(&app, "access_copy_produced", &request).len(), 1);
}

#[test]
fn a_refused_request_gives_no_copy() {
    let app = TestApp::spawn();
    let staff = staff(&app);
    let phone = phone(&app, &staff.worker);
    let (case_id, referral, ..) = case_with_minutes(&phone);

    let request = recorded(&app, &staff.worker, &case_id, "legal_representative");
    // A refusal says why, and has nothing to redact.
    let res = review(
        &app,
        &staff.coordinator,
        &request,
        json!({"decision": "refused"}),
    );
    assert_eq!(res.error_pointers(), ["/best_interests_reasoning"]);
    let res = review(
        &app,
        &staff.coordinator,
        &request,
        json!({
            "decision": "refused",
            "best_interests_reasoning": REASONING,
            "redactions": [{"instance_id": referral, "pointer": "/child", "reason": "x"}]
        }),
    );
    assert_eq!(res.error_pointers(), ["/redactions"]);
    let res = review(
        &app,
        &staff.coordinator,
        &request,
        json!({"decision": "maybe", "best_interests_reasoning": REASONING}),
    );
    assert_eq!(res.error_pointers(), ["/decision"]);

    let res = review(
        &app,
        &staff.coordinator,
        &request,
        json!({"decision": "refused", "best_interests_reasoning": REASONING}),
    );
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["status"], "refused");

    copy(&app, &staff.worker, &request).assert_problem(409, "conflict");
    copy(&app, &staff.coordinator, &request).assert_problem(409, "conflict");
    assert!(audited(&app, "access_copy_produced", &request).is_empty());
    let reviewed = audited(&app, "access_request_reviewed", &request);
    assert_eq!(reviewed, [Some("refused; 0 redactions".to_string())]);
}

#[test]
fn only_the_assigned_worker_and_the_sites_coordinator_handle_requests() {
    let app = TestApp::spawn();
    let staff = staff(&app);
    let phone = phone(&app, &staff.worker);
    let (case_id, _, minutes, _) = case_with_minutes(&phone);
    let request = recorded(&app, &staff.coordinator, &case_id, "child");

    let outsiders = [&staff.other_worker, &staff.elsewhere, &staff.analyst];
    for token in outsiders {
        record(&app, token, &case_id, "child").assert_problem(404, "not_found");
        review(&app, token, &request, json!({"decision": "approved"}))
            .assert_problem(404, "not_found");
        app.get(&format!("/api/v1/submissions/{minutes}/family-copy"), token)
            .assert_problem(404, "not_found");
        app.get(&format!("/api/v1/cases/{case_id}/access-requests"), token)
            .assert_problem(404, "not_found");
    }
    // The worker records and hands over; only the Manager reviews.
    review(
        &app,
        &staff.worker,
        &request,
        json!({"decision": "approved"}),
    )
    .assert_problem(403, "forbidden");
    let res = review(
        &app,
        &staff.coordinator,
        &request,
        json!({"decision": "approved"}),
    );
    assert_eq!(res.status, 200, "{}", res.text);
    for token in outsiders {
        copy(&app, token, &request).assert_problem(404, "not_found");
    }
    assert!(audited(&app, "access_copy_produced", &request).is_empty());
    assert_eq!(copy(&app, &staff.worker, &request).status, 200);

    // Unknown requests and cases are 404 to those who may ask.
    copy(&app, &staff.worker, &uuid::Uuid::new_v4().to_string()).assert_problem(404, "not_found");
    record(
        &app,
        &staff.coordinator,
        &uuid::Uuid::new_v4().to_string(),
        "child",
    )
    .assert_problem(404, "not_found");
}

#[test]
fn the_familys_copy_of_minutes_leaves_out_the_professional_discussion() {
    let app = TestApp::spawn();
    let staff = staff(&app);
    let phone = phone(&app, &staff.worker);
    let (case_id, referral, minutes, _) = case_with_minutes(&phone);

    let res = app.get(
        &format!("/api/v1/submissions/{minutes}/family-copy?requested_by=parent"),
        &staff.worker,
    );
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["case_id"], case_id.as_str());
    assert_eq!(res.body["form_id"], "kz.cp_meeting");
    assert_eq!(
        res.body["withheld_sections"],
        json!(["professional_discussion"])
    );
    let data = res.body["data"].as_object().unwrap();
    assert!(!data.contains_key("professional_discussion"));
    assert!(!res.text.contains("has been charged"));
    let mut expected = fixture("kz.cp_meeting");
    expected
        .as_object_mut()
        .unwrap()
        .remove("professional_discussion");
    assert_eq!(res.body["data"], expected);
    let rows = audited(&app, "minutes_family_copy", &minutes);
    assert_eq!(rows, [Some("kz.cp_meeting for parent".to_string())]);

    // The coordinator may give it too; a referral is not minutes.
    let res = app.get(
        &format!("/api/v1/submissions/{minutes}/family-copy"),
        &staff.coordinator,
    );
    assert_eq!(res.status, 200, "{}", res.text);
    app.get(
        &format!("/api/v1/submissions/{referral}/family-copy"),
        &staff.worker,
    )
    .assert_problem(404, "not_found");
    let res = app.get(
        &format!("/api/v1/submissions/{minutes}/family-copy?requested_by=neighbour"),
        &staff.worker,
    );
    assert_eq!(res.error_pointers(), ["/requested_by"]);

    // Minutes replaced by an edit: the copy is of the edit.
    let mut envelope = form_envelope("kz.cp_meeting", &case_id, fixture("kz.cp_meeting"));
    envelope["supersedes"] = json!(minutes);
    assert_eq!(phone.send(&envelope).status, 201);
    app.get(
        &format!("/api/v1/submissions/{minutes}/family-copy"),
        &staff.worker,
    )
    .assert_problem(409, "conflict");
    let edit = envelope["instance_id"].as_str().unwrap();
    let res = app.get(
        &format!("/api/v1/submissions/{edit}/family-copy"),
        &staff.worker,
    );
    assert_eq!(res.status, 200, "{}", res.text);
    assert!(res.body["data"].get("professional_discussion").is_none());
}
