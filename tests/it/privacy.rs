//! Consents and disclosures over real HTTP: an identifying export needs a
//! legal basis; one resting on consent needs the consents the child's age
//! asks for (KZ 10.4: the parent under 16), names them, covers one case,
//! and stops the moment a consent is withdrawn; shares made outside the
//! server go to the same log.

use crate::common;

use common::build;
use common::phone::{fixture, form_envelope, phone};
use common::TestApp;
use serde_json::{json, Value};

struct Setup {
    app: TestApp,
    coordinator: String,
    worker: String,
    other_worker: String,
    analyst: String,
    other_coordinator: String,
    case_id: String,
    sibling_case: String,
}

fn referral(case_id: &str, name: &str, dob: &str) -> Value {
    build::referral(case_id)
        .child(name)
        .born(dob)
        .dob_known()
        .envelope()
}

/// A child of 12 (the parent consents for her, KZ 10.4) and another case
/// at the same site.
fn setup() -> Setup {
    let app = TestApp::spawn();
    let staff = app.staff().other_worker().elsewhere().analyst().build();
    let (coordinator, worker) = (staff.coordinator, staff.worker);
    let (other_worker, analyst) = (staff.other_worker, staff.analyst);
    let other_coordinator = staff.elsewhere;
    let case_id = uuid::Uuid::new_v4().to_string();
    let sibling_case = uuid::Uuid::new_v4().to_string();
    let phone = phone(&app, &worker);
    let res = phone.send(&referral(&case_id, "Madina Privacy", "2014-05-01"));
    assert_eq!(res.status, 201, "{}", res.text);
    let res = phone.send(&referral(&sibling_case, "Arman Privacy", "2011-02-03"));
    assert_eq!(res.status, 201, "{}", res.text);
    Setup {
        app,
        coordinator,
        worker,
        other_worker,
        analyst,
        other_coordinator,
        case_id,
        sibling_case,
    }
}

fn consent(s: &Setup, subject: &str, kind: &str, scopes: &[&str]) -> String {
    let res = s.app.post(
        &format!("/api/v1/cases/{}/consents", s.case_id),
        &s.worker,
        json!({
            "subject": subject, "kind": kind, "medium": "written",
            "scopes": scopes, "given_on": "2026-11-20",
            "recipient": "Kazakh Red Crescent family tracing",
        }),
    );
    assert_eq!(res.status, 201, "{}", res.text);
    res.body["id"].as_str().unwrap().to_string()
}

/// An identifying form export by consent of the consents `ids`.
fn export_by_consent(s: &Setup, case: Option<&str>, ids: &[&str]) -> common::Response {
    let case = case.map(|c| format!("&case={c}")).unwrap_or_default();
    s.app.get(
        &format!(
            "/api/v1/exports/forms/kz.referral.csv?identifying=true&legal_basis=consent\
             &consent={}&recipient=Kazakh%20Red%20Crescent&purpose=family%20tracing%20abroad{case}",
            ids.join(",")
        ),
        &s.coordinator,
    )
}

#[test]
fn a_disclosure_by_consent_needs_the_right_signatures_and_stops_at_a_withdrawal() {
    let s = setup();
    let child = consent(&s, "child", "consent", &["disclose"]);
    // Under 16 the child's word alone is not enough (KZ 10.4).
    let res = export_by_consent(&s, Some(&s.case_id), &[&child]);
    assert_eq!(res.error_pointers(), ["/consent"], "{}", res.text);
    assert!(res.text.contains("aged 12"), "{}", res.text);
    assert!(
        res.text.contains("parent or legal representative"),
        "{}",
        res.text
    );

    // A consent only to take part does not let data go.
    let participation = consent(&s, "parent", "consent", &["participate"]);
    let res = export_by_consent(&s, Some(&s.case_id), &[&participation]);
    assert!(
        res.text.contains("does not consent to sharing"),
        "{}",
        res.text
    );

    let parent = consent(&s, "parent", "consent", &["disclose", "collect_store"]);
    // By consent, one case at a time.
    let res = export_by_consent(&s, None, &[&parent]);
    assert_eq!(res.error_pointers(), ["/case"]);
    let res = export_by_consent(&s, Some(&s.sibling_case), &[&parent]);
    assert!(
        res.text.contains("is not a consent of this case"),
        "{}",
        res.text
    );

    let res = export_by_consent(&s, Some(&s.case_id), &[&parent, &child]);
    assert_eq!(res.status, 200, "{}", res.text);
    assert!(res.text.contains("Madina Privacy"));
    assert!(
        !res.text.contains("Arman Privacy"),
        "only the consenting case"
    );
    let log = s.app.get(
        &format!("/api/v1/disclosures?case={}", s.case_id),
        &s.coordinator,
    );
    assert_eq!(log.body["items"][0]["legal_basis"], "consent");
    assert_eq!(log.body["items"][0]["consent_ids"], json!([parent, child]));

    // The parent withdraws: the next export on that consent is refused.
    let res = s.app.post(
        &format!("/api/v1/consents/{parent}/withdrawal"),
        &s.worker,
        json!({ "reason": "the mother asked by telephone to stop sharing" }),
    );
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["withdrawn"], true);
    let res = export_by_consent(&s, Some(&s.case_id), &[&parent]);
    assert_eq!(res.error_pointers(), ["/consent"]);
    assert!(res.text.contains("was withdrawn"), "{}", res.text);
    // A withdrawal is not undone by naming other records: the parent's
    // latest word is no.
    let res = export_by_consent(&s, Some(&s.case_id), &[&child]);
    assert!(res.text.contains("withdrew"), "{}", res.text);
    let res = s.app.post(
        &format!("/api/v1/consents/{parent}/withdrawal"),
        &s.worker,
        json!({ "reason": "again" }),
    );
    assert_eq!(res.status, 409, "{}", res.text);

    // Consent given again later counts again.
    let again = consent(&s, "legal_representative", "consent", &["disclose"]);
    let res = export_by_consent(&s, Some(&s.case_id), &[&again]);
    assert!(res.text.contains("the parent withdrew"), "{}", res.text);
    let renewed = consent(&s, "parent", "consent", &["disclose"]);
    let res = export_by_consent(&s, Some(&s.case_id), &[&renewed]);
    assert_eq!(res.status, 200, "{}", res.text);

    let list = s.app.get(
        &format!("/api/v1/cases/{}/consents", s.case_id),
        &s.coordinator,
    );
    assert_eq!(list.body["items"].as_array().unwrap().len(), 5);
}

#[test]
fn consents_are_recorded_and_read_by_those_who_work_on_the_case() {
    let s = setup();
    let path = format!("/api/v1/cases/{}/consents", s.case_id);
    let res = s.app.post(
        &path,
        &s.worker,
        json!({
            "subject": "uncle", "kind": "consent", "medium": "email",
            "scopes": ["everything"], "given_on": "2099-01-01",
        }),
    );
    assert_eq!(
        res.error_pointers(),
        ["/subject", "/medium", "/scopes/0", "/given_on"],
        "{}",
        res.text
    );
    let body = json!({
        "subject": "parent", "kind": "consent", "medium": "thumbprint",
        "scopes": ["disclose"], "given_on": "2026-11-20",
    });
    for token in [&s.other_worker, &s.analyst, &s.other_coordinator] {
        s.app
            .post(&path, token, body.clone())
            .assert_problem(404, "not_found");
        s.app.get(&path, token).assert_problem(404, "not_found");
    }
    assert_eq!(s.app.post(&path, &s.coordinator, body).status, 201);
    let list = s.app.get(&path, &s.worker);
    assert_eq!(list.body["items"][0]["medium"], "thumbprint");
    assert_eq!(list.body["items"][0]["withdrawn"], false);
}

#[test]
fn shares_made_outside_the_server_are_logged_on_a_legal_basis() {
    let s = setup();
    let path = format!("/api/v1/cases/{}/disclosures", s.case_id);
    let res = s.app.post(&path, &s.worker, json!({ "what": "" }));
    assert_eq!(res.error_pointers(), ["/what"], "{}", res.text);
    let res = s.app.post(
        &path,
        &s.worker,
        json!({ "what": "IA report", "legal_basis": "gossip", "recipient": "x" }),
    );
    assert_eq!(
        res.error_pointers(),
        ["/legal_basis", "/purpose"],
        "{}",
        res.text
    );
    let share = json!({
        "what": "initial assessment report",
        "legal_basis": "staff_harm",
        "recipient": "Office of the Prosecutor, Almaty",
        "purpose": "report of suspected harm by a staff member (Part 11)",
        "method": "sealed letter",
    });
    s.app
        .post(&path, &s.analyst, share.clone())
        .assert_problem(404, "not_found");
    let res = s.app.post(&path, &s.worker, share);
    assert_eq!(res.status, 201, "{}", res.text);
    assert_eq!(res.body["method"], "sealed letter");

    let log = s.app.get("/api/v1/disclosures", &s.coordinator);
    assert_eq!(log.status, 200, "{}", log.text);
    assert_eq!(log.body["items"][0]["what"], "initial assessment report");
    // Another site's coordinator sees none of it; analysts have no log.
    let theirs = s.app.get("/api/v1/disclosures", &s.other_coordinator);
    assert_eq!(theirs.body["items"], json!([]));
    s.app
        .get("/api/v1/disclosures", &s.analyst)
        .assert_problem(403, "forbidden");
}

/// BT D-01 filled on the phone is a consent record; a later D-01 of the
/// same signatory replaces it (consent "is not static", §9.1).
#[test]
fn consent_forms_sent_from_the_phone_become_consent_records() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (_, worker) = app.user(&admin, "karma", "field_worker", &["BT-NCWC"]);
    let (_, supervisor) = app.user(&admin, "pema", "coordinator", &["BT-NCWC"]);
    let phone = common::phone::phone_for(&app, &worker, "bt");
    let case_id = uuid::Uuid::new_v4().to_string();
    let res = phone.send(&form_envelope(
        "bt.registration",
        &case_id,
        fixture("bt.registration"),
    ));
    assert_eq!(res.status, 201, "{}", res.text);

    let first = form_envelope("bt.consent_child", &case_id, fixture("bt.consent_child"));
    assert_eq!(phone.send(&first).status, 201);
    let path = format!("/api/v1/cases/{case_id}/consents");
    let list = app.get(&path, &supervisor);
    let items = list.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{}", list.text);
    assert_eq!(items[0]["subject"], "child");
    assert_eq!(items[0]["kind"], "consent");
    assert_eq!(
        items[0]["scopes"],
        json!([
            "participate",
            "collect_store",
            "aggregate",
            "share_providers"
        ])
    );
    assert_eq!(items[0]["given_on"], "2026-03-03");
    assert_eq!(items[0]["instance_id"], first["instance_id"]);
    let first_id = items[0]["id"].as_str().unwrap().to_string();

    // Three weeks later the child no longer wants her data shared.
    let mut later = fixture("bt.consent_child");
    later["consents"]["consent_share_providers"] = json!(false);
    later["signatures"]["date"] = json!("2026-03-24");
    assert_eq!(
        phone
            .send(&form_envelope("bt.consent_child", &case_id, later))
            .status,
        201
    );
    let list = app.get(&path, &supervisor);
    let items = list.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["withdrawn"], true, "{}", list.text);
    assert_eq!(items[0]["withdrawal_reason"], "superseded by a later form");
    assert_eq!(
        items[1]["scopes"],
        json!(["participate", "collect_store", "aggregate"])
    );
    let second_id = items[1]["id"].as_str().unwrap().to_string();

    let export = |ids: &str| {
        app.get(
            &format!(
                "/api/v1/exports/forms/bt.registration.csv?identifying=true&legal_basis=consent\
                 &case={case_id}&consent={ids}&recipient=Nazhoen%20Lamtoen\
                 &purpose=referral%20to%20a%20service%20provider"
            ),
            &supervisor,
        )
    };
    assert!(export(&first_id).text.contains("was withdrawn"));
    assert!(export(&second_id)
        .text
        .contains("does not consent to sharing"));
}

/// The KZ record of a disclosure made in the field goes to the log, with
/// the consents it rests on.
#[test]
fn a_disclosure_recorded_on_the_phone_goes_to_the_log() {
    let s = setup();
    let mut data = fixture("kz.disclosure");
    // The mother's recorded consent, scanned (the phone helper declares
    // documents and images).
    data["consent"]["consent_records"][1]["attachment"] = json!("consent-mother.pdf");
    let envelope = form_envelope("kz.disclosure", &s.case_id, data);
    let res = phone(&s.app, &s.worker).send(&envelope);
    assert_eq!(res.status, 201, "{}", res.text);
    let log = s.app.get(
        &format!("/api/v1/disclosures?case={}", s.case_id),
        &s.coordinator,
    );
    let entry = &log.body["items"][0];
    assert_eq!(entry["legal_basis"], "consent", "{}", log.text);
    assert_eq!(entry["recipient"], "Rodnik legal aid service");
    let consents = s.app.get(
        &format!("/api/v1/cases/{}/consents", s.case_id),
        &s.coordinator,
    );
    let ids: Vec<&Value> = consents.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["id"])
        .collect();
    assert!(!ids.is_empty());
    assert_eq!(entry["consent_ids"].as_array().unwrap().len(), ids.len());
}
