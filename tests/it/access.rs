//! The access policy, proved over real HTTP: every endpoint called as every
//! role — and as the assigned and an unassigned worker, and a coordinator of
//! another site — against the table below; each refusal and each read of
//! case content leaves its audit row; reassignment takes a case from the
//! former worker; break-glass opens a case of another site for a while.

use crate::common;

use casesync::db::schema::{audit_log, break_glass_grants};
use common::build::referral;
use common::phone::{attachment_content, declarations, fixture, form_envelope, phone};
use common::{Response, TestApp};
use diesel::prelude::*;
use serde_json::{json, Value};

/// The callers of the matrix, in the table's column order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Admin,
    /// Coordinator of the case's site.
    Coordinator,
    /// Coordinator of another site of the same programme.
    OtherCoordinator,
    /// The field worker the case is assigned to.
    Assigned,
    /// A field worker of the case's site it is not assigned to.
    Unassigned,
    Analyst,
    Viewer,
}

const CALLERS: [Caller; 7] = [
    Caller::Admin,
    Caller::Coordinator,
    Caller::OtherCoordinator,
    Caller::Assigned,
    Caller::Unassigned,
    Caller::Analyst,
    Caller::Viewer,
];

/// `Y` allowed (2xx); `P` past the policy, the request itself wrong on
/// purpose (a reset password too short, a draft that does not exist) so the
/// world stays as it is; `-` refused (403: the role may not, or the caller
/// may see the object but not do this); `H` hidden: refused as if the
/// object did not exist (404, the very answer a missing object gets), and
/// audited as a refusal all the same (#16: no existence oracle).
type Row = (&'static str, &'static str, [char; 7]);

/// Every route of the API, in an order that keeps the world intact (the
/// break-glass grant last). Placeholders: `{case}`, `{instance}` (the
/// referral that opened it), `{user}` (a spare worker of the case's site),
/// `{site}` (the case's site), `{token}` (a device token of the spare
/// worker), `{version}` (the referral form's version), `{consent}` (a
/// consent of the case), `{request}` (a child's request for the file). Columns: admin,
/// coordinator, other site's coordinator, assigned worker, unassigned
/// worker, analyst, viewer. Left out: `POST /sessions` (no caller yet),
/// `DELETE /sessions/current` and `POST /me/password` (each caller's own;
/// tests/identity.rs).
#[rustfmt::skip]
const MATRIX: &[Row] = &[
    ("GET", "/api/v1/me", ['Y', 'Y', 'Y', 'Y', 'Y', 'Y', 'Y']),
    // The API's description: public (it holds no data), and the same to all.
    ("GET", "/api/v1/openapi.json", ['Y', 'Y', 'Y', 'Y', 'Y', 'Y', 'Y']),
    ("GET", "/api/v1/users", ['Y', 'Y', 'Y', '-', '-', '-', '-']),
    ("POST", "/api/v1/users", ['Y', '-', '-', '-', '-', '-', '-']),
    ("GET", "/api/v1/users/{user}", ['Y', 'Y', 'H', '-', '-', '-', '-']),
    ("PATCH", "/api/v1/users/{user}", ['Y', '-', '-', '-', '-', '-', '-']),
    ("POST", "/api/v1/users/{user}/password", ['P', '-', '-', '-', '-', '-', '-']),
    ("GET", "/api/v1/sites", ['Y', 'Y', 'Y', 'Y', 'Y', 'Y', 'Y']),
    ("POST", "/api/v1/sites", ['Y', '-', '-', '-', '-', '-', '-']),
    ("GET", "/api/v1/sites/{site}", ['Y', 'Y', 'Y', 'Y', 'Y', 'Y', 'Y']),
    ("PATCH", "/api/v1/sites/{site}", ['Y', '-', '-', '-', '-', '-', '-']),
    ("GET", "/api/v1/tokens", ['Y', 'Y', 'Y', '-', '-', '-', '-']),
    ("POST", "/api/v1/tokens", ['Y', 'Y', '-', '-', '-', '-', '-']),
    ("POST", "/api/v1/tokens/collect-settings", ['Y', 'Y', '-', '-', '-', '-', '-']),
    ("DELETE", "/api/v1/tokens/{token}", ['Y', 'P', '-', '-', '-', '-', '-']),
    // Each caller's own tokens only: another's is not found (404).
    ("DELETE", "/api/v1/me/tokens/{token}", ['P', 'P', 'P', 'P', 'P', 'P', 'P']),
    ("GET", "/api/v1/programmes/kz/keys/current", ['Y', 'Y', 'Y', 'Y', 'Y', 'Y', 'Y']),
    ("GET", "/api/v1/programmes/kz/calendar", ['Y', 'Y', 'Y', 'Y', 'Y', 'Y', 'Y']),
    ("PUT", "/api/v1/programmes/kz/calendar/days/2026-12-30", ['Y', '-', '-', '-', '-', '-', '-']),
    ("DELETE", "/api/v1/programmes/kz/calendar/days/2026-12-30", ['Y', '-', '-', '-', '-', '-', '-']),
    ("GET", "/api/v1/sync", ['Y', 'Y', 'Y', 'Y', 'Y', 'Y', 'Y']),
    ("SEND", "/api/v1/submissions", ['-', 'Y', 'Y', 'Y', 'Y', '-', '-']),
    ("BATCH", "/api/v1/submissions/batch", ['-', 'Y', 'Y', 'Y', 'Y', '-', '-']),
    ("GET", "/api/v1/submissions/held", ['-', 'Y', 'Y', '-', '-', '-', '-']),
    ("GET", "/api/v1/submissions/held?site={site}", ['-', 'Y', '-', '-', '-', '-', '-']),
    ("POST", "/api/v1/submissions/held/{instance}/dismissal", ['-', 'P', 'H', '-', '-', '-', '-']),
    ("PUT", "/api/v1/submissions/{instance}/attachments/{attachment}", ['H', '-', 'H', 'Y', 'H', 'H', 'H']),
    ("GET", "/api/v1/submissions/{instance}/attachments/{attachment}", ['H', 'Y', 'H', 'Y', 'H', 'H', 'H']),
    ("GET", "/api/v1/cases", ['-', 'Y', 'Y', 'Y', 'Y', '-', '-']),
    ("GET", "/api/v1/cases/{case}", ['H', 'Y', 'H', 'Y', 'H', 'H', 'H']),
    ("GET", "/api/v1/cases/{case}/timeline", ['H', 'Y', 'H', 'Y', 'H', 'H', 'H']),
    ("POST", "/api/v1/cases/{case}/assignment", ['H', 'Y', 'H', '-', 'H', 'H', 'H']),
    ("POST", "/api/v1/cases/{case}/approvals", ['H', 'P', 'H', '-', 'H', 'H', 'H']),
    ("POST", "/api/v1/cases/{case}/siblings", ['H', 'P', 'H', '-', 'H', 'H', 'H']),
    ("GET", "/api/v1/children/duplicates", ['-', 'Y', 'Y', '-', '-', '-', '-']),
    ("POST", "/api/v1/children/duplicates/no-such-pair/link", ['-', 'P', 'P', '-', '-', '-', '-']),
    ("GET", "/api/v1/deadlines", ['-', 'Y', 'Y', 'Y', 'Y', '-', '-']),
    ("GET", "/api/v1/conflicts", ['-', 'Y', 'Y', 'Y', 'Y', '-', '-']),
    ("POST", "/api/v1/conflicts/no-such-conflict/resolution", ['-', 'P', 'P', '-', '-', '-', '-']),
    ("GET", "/api/v1/exports/cases.csv?programme=kz", ['-', 'Y', 'Y', '-', '-', 'Y', '-']),
    ("GET", "/api/v1/exports/forms/kz.referral.csv", ['-', 'Y', 'Y', '-', '-', 'Y', '-']),
    ("GET", "/api/v1/exports/forms/kz.referral.csv?identifying=true&legal_basis=required_by_law&provision=court%20order%2012%2F2026&recipient=district%20court&purpose=court%20order%20no.%2012%2F2026", ['-', 'Y', 'Y', '-', '-', '-', '-']),
    ("GET", "/api/v1/indicators/kz?from=2026-01-01&to=2026-12-31", ['-', 'Y', 'Y', '-', '-', 'Y', 'Y']),
    ("GET", "/api/v1/forms", ['Y', 'Y', 'Y', 'Y', 'Y', 'Y', 'Y']),
    ("GET", "/api/v1/forms/kz.referral", ['Y', 'Y', 'Y', 'Y', 'Y', 'Y', 'Y']),
    ("GET", "/api/v1/forms/kz.referral/versions/{version}", ['Y', 'Y', 'Y', 'Y', 'Y', 'Y', 'Y']),
    ("GET", "/api/v1/forms/kz.referral/versions/{version}/diff/{version}", ['Y', 'Y', 'Y', 'Y', 'Y', 'Y', 'Y']),
    ("POST", "/api/v1/forms/kz.referral/versions/{version}/validate", ['Y', 'Y', 'Y', 'Y', 'Y', 'Y', 'Y']),
    ("GET", "/api/v1/forms/kz.referral/draft", ['P', '-', '-', '-', '-', '-', '-']),
    ("POST", "/api/v1/forms/kz.referral/draft", ['P', '-', '-', '-', '-', '-', '-']),
    ("POST", "/api/v1/forms/kz.referral/draft/publish", ['P', '-', '-', '-', '-', '-', '-']),
    ("POST", "/api/v1/forms/kz.referral/versions/0.0.0/retire", ['P', '-', '-', '-', '-', '-', '-']),
    ("GET", "/api/v1/audit", ['Y', '-', '-', '-', '-', '-', '-']),
    ("GET", "/api/v1/exports/audit.csv", ['Y', '-', '-', '-', '-', '-', '-']),
    ("GET", "/api/v1/cases/{case}/consents", ['H', 'Y', 'H', 'Y', 'H', 'H', 'H']),
    ("POST", "/api/v1/cases/{case}/consents", ['H', 'Y', 'H', 'Y', 'H', 'H', 'H']),
    ("POST", "/api/v1/consents/{consent}/withdrawal", ['H', 'Y', 'H', 'P', 'H', 'H', 'H']),
    ("POST", "/api/v1/cases/{case}/disclosures", ['H', 'Y', 'H', 'Y', 'H', 'H', 'H']),
    ("GET", "/api/v1/disclosures", ['Y', 'Y', 'Y', '-', '-', '-', '-']),
    ("POST", "/api/v1/cases/{case}/access-requests", ['H', 'Y', 'H', 'Y', 'H', 'H', 'H']),
    ("GET", "/api/v1/cases/{case}/access-requests", ['H', 'Y', 'H', 'Y', 'H', 'H', 'H']),
    ("POST", "/api/v1/access-requests/{request}/review", ['H', 'Y', 'H', '-', 'H', 'H', 'H']),
    ("GET", "/api/v1/access-requests/{request}/copy", ['H', 'Y', 'H', 'Y', 'H', 'H', 'H']),
    ("GET", "/api/v1/submissions/{instance}/family-copy", ['H', 'P', 'H', 'P', 'H', 'H', 'H']),
    ("GET", "/api/v1/retention?programme=kz", ['-', 'Y', 'Y', '-', '-', '-', '-']),
    // OpenRosa (ODK Collect): those who fill forms at a site of the
    // programme; with a bearer token here, as a browser page would (Collect
    // signs in with Basic, tests/it/openrosa.rs). An empty upload is wrong
    // past the policy (400). The key path signs in with the spare worker's
    // device token whoever calls, so every caller is that worker.
    ("GET", "/odk/kz/formList", ['-', 'Y', 'Y', 'Y', 'Y', '-', '-']),
    ("GET", "/odk/kz/forms/kz.referral.xml", ['-', 'Y', 'Y', 'Y', 'Y', '-', '-']),
    ("GET", "/odk/kz/forms/kz.referral/manifest", ['-', 'Y', 'Y', 'Y', 'Y', '-', '-']),
    ("GET", "/odk/kz/entities/cases.csv", ['-', 'Y', 'Y', 'Y', 'Y', '-', '-']),
    ("GET", "/odk/kz/entities/cases/integrity?id=x", ['-', 'Y', 'Y', 'Y', 'Y', '-', '-']),
    ("HEAD", "/odk/kz/submission", ['-', 'Y', 'Y', 'Y', 'Y', '-', '-']),
    ("POST", "/odk/kz/submission", ['-', 'P', 'P', 'P', 'P', '-', '-']),
    ("GET", "/odk/key/{devicekey}/kz/formList", ['Y', 'Y', 'Y', 'Y', 'Y', 'Y', 'Y']),
    ("GET", "/odk/key/{devicekey}/kz/forms/kz.referral.xml", ['Y', 'Y', 'Y', 'Y', 'Y', 'Y', 'Y']),
    ("GET", "/odk/key/{devicekey}/kz/forms/kz.referral/manifest", ['Y', 'Y', 'Y', 'Y', 'Y', 'Y', 'Y']),
    ("GET", "/odk/key/{devicekey}/kz/entities/cases.csv", ['Y', 'Y', 'Y', 'Y', 'Y', 'Y', 'Y']),
    ("GET", "/odk/key/{devicekey}/kz/entities/cases/integrity?id=x", ['Y', 'Y', 'Y', 'Y', 'Y', 'Y', 'Y']),
    ("HEAD", "/odk/key/{devicekey}/kz/submission", ['Y', 'Y', 'Y', 'Y', 'Y', 'Y', 'Y']),
    ("POST", "/odk/key/{devicekey}/kz/submission", ['P', 'P', 'P', 'P', 'P', 'P', 'P']),
    ("GET", "/api/v1/break-glass", ['Y', 'Y', 'Y', '-', '-', '-', '-']),
    ("POST", "/api/v1/cases/{case}/break-glass", ['-', 'P', 'Y', '-', '-', '-', '-']),
];

/// Reads of case content and exports: each allowed call leaves an audit row
/// with its request id.
fn reads_case_content(method: &str, path: &str) -> bool {
    method == "GET"
        && (path.contains("{case}")
            || path.contains("{request}")
            || path.contains("/retention")
            || path.contains("/attachments/")
            || path.contains("/exports/")
            || path.starts_with("/api/v1/cases"))
}

struct World {
    /// Shared with [`missing_objects`]' world.
    app: std::rc::Rc<TestApp>,
    tokens: Vec<(Caller, String)>,
    case_id: String,
    instance_id: String,
    attachment: String,
    assigned_id: String,
    spare_id: String,
    site_id: String,
    device_token_id: String,
    /// The spare worker's device token itself (the OpenRosa key path).
    device_key: String,
    version: String,
    consent_id: String,
    request_id: String,
}

impl World {
    fn token(&self, caller: Caller) -> &str {
        &self.tokens.iter().find(|(c, _)| *c == caller).unwrap().1
    }
}

/// Two KZ sites; the case at Almaty, assigned to the worker who opened it.
fn world() -> World {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (_, coordinator) = app.user(&admin, "manager", "coordinator", &["KZ-CAM-ALA"]);
    let (_, other) = app.user(&admin, "shymkent", "coordinator", &["KZ-CAM-SHY"]);
    let (assigned_id, assigned) = app.user(&admin, "aigerim", "field_worker", &["KZ-CAM-ALA"]);
    let (_, unassigned) = app.user(&admin, "bolat", "field_worker", &["KZ-CAM-ALA"]);
    let (spare_id, _) = app.user(&admin, "spare", "field_worker", &["KZ-CAM-ALA"]);
    let (_, analyst) = app.user(&admin, "analyst", "analyst", &["KZ-CAM-ALA"]);
    let (_, viewer) = app.user(&admin, "committee", "viewer", &[]);
    let case_id = uuid::Uuid::new_v4().to_string();
    let envelope = referral(&case_id).child("Dana Access").envelope();
    let res = phone(&app, &assigned).send(&envelope);
    assert_eq!(res.status, 201, "{}", res.text);
    let attachment = declarations(&envelope["data"])
        .first()
        .expect("the referral fixture declares an attachment")["name"]
        .as_str()
        .unwrap()
        .to_string();
    let token = app.post(
        "/api/v1/tokens",
        &admin,
        json!({ "user_id": spare_id, "label": "spare phone" }),
    );
    assert_eq!(token.status, 201, "{}", token.text);
    let version = app
        .get("/api/v1/forms/kz.referral", &admin)
        .header("x-form-version")
        .unwrap()
        .to_string();
    let consent = app.post(
        &format!("/api/v1/cases/{case_id}/consents"),
        &assigned,
        consent_body(),
    );
    assert_eq!(consent.status, 201, "{}", consent.text);
    let request = app.post(
        &format!("/api/v1/cases/{case_id}/access-requests"),
        &assigned,
        access_request_body(),
    );
    assert_eq!(request.status, 201, "{}", request.text);
    World {
        request_id: request.body["id"].as_str().unwrap().to_string(),
        consent_id: consent.body["id"].as_str().unwrap().to_string(),
        site_id: app.site_id(&admin, "KZ-CAM-ALA"),
        device_token_id: token.body["id"].as_str().unwrap().to_string(),
        // A token of its own: the matrix revokes the first one.
        device_key: {
            let key = app.post(
                "/api/v1/tokens",
                &admin,
                json!({ "user_id": spare_id, "label": "spare phone, by link" }),
            );
            assert_eq!(key.status, 201, "{}", key.text);
            key.body["token"].as_str().unwrap().to_string()
        },
        tokens: vec![
            (Caller::Admin, admin),
            (Caller::Coordinator, coordinator),
            (Caller::OtherCoordinator, other),
            (Caller::Assigned, assigned),
            (Caller::Unassigned, unassigned),
            (Caller::Analyst, analyst),
            (Caller::Viewer, viewer),
        ],
        instance_id: envelope["instance_id"].as_str().unwrap().to_string(),
        app: std::rc::Rc::new(app),
        case_id,
        attachment,
        assigned_id,
        spare_id,
        version,
    }
}

fn access_request_body() -> Value {
    json!({ "requester": "child", "received_on": "2026-11-20" })
}

fn consent_body() -> Value {
    json!({
        "subject": "parent", "kind": "consent", "medium": "written",
        "scopes": ["participate", "disclose"], "given_on": "2026-11-20",
    })
}

/// A body the route accepts (or, for `P` rows, one it refuses past the
/// policy), made unique per caller where it creates something.
fn body_for(w: &World, method: &str, path: &str, caller: Caller) -> Value {
    let tag = format!("{caller:?}").to_lowercase();
    match (method, path) {
        ("POST", "/api/v1/users") => json!({
            "username": format!("new-{tag}"), "role": "field_worker",
            "site_ids": [w.site_id], "password": common::USER_PASSWORD,
        }),
        ("PATCH", "/api/v1/users/{user}") => json!({ "display_name": "Spare worker" }),
        ("POST", "/api/v1/users/{user}/password") => json!({ "password": "short" }),
        ("POST", "/api/v1/sites") => json!({
            "code": format!("KZ-NEW-{}", tag.to_uppercase()), "name": "New site", "programme": "kz",
        }),
        ("PATCH", "/api/v1/sites/{site}") => json!({ "name": "Almaty CAM" }),
        ("POST", "/api/v1/tokens" | "/api/v1/tokens/collect-settings") => {
            json!({ "user_id": w.spare_id, "label": format!("by {tag}") })
        }
        ("PUT", p) if p.contains("/calendar/") => json!({ "kind": "holiday", "name": "Test day" }),
        ("POST", "/api/v1/cases/{case}/assignment") => json!({ "assignee": w.assigned_id }),
        ("POST", "/api/v1/cases/{case}/approvals") => {
            json!({ "subject": "no_such_subject", "decision": "approved" })
        }
        ("POST", "/api/v1/cases/{case}/siblings") => json!({ "case_id": w.case_id }),
        ("POST", p) if p.ends_with("/resolution") => json!({ "choice": "submitted" }),
        ("POST", p) if p.ends_with("/validate") => fixture("kz.referral"),
        ("POST", "/api/v1/forms/kz.referral/draft") => json!({ "title": "not a form" }),
        ("POST", "/api/v1/cases/{case}/consents") => consent_body(),
        ("POST", "/api/v1/cases/{case}/access-requests") => access_request_body(),
        ("POST", p) if p.ends_with("/review") => {
            json!({ "decision": "approved", "redactions": [] })
        }
        ("POST", p) if p.ends_with("/withdrawal") => json!({ "reason": "asked to stop" }),
        ("POST", p) if p.ends_with("/dismissal") => {
            json!({ "reason": "the worker sent a corrected form" })
        }
        ("POST", "/api/v1/cases/{case}/disclosures") => json!({
            "what": "initial assessment report", "legal_basis": "required_by_law",
            "provision": "Code on Marriage and Family art. 76", "recipient": "district court",
            "purpose": "the court asked for the assessment", "method": "sealed letter",
        }),
        ("POST", "/api/v1/cases/{case}/break-glass") => {
            json!({ "reason": "the child was brought to the Shymkent police at night" })
        }
        _ => json!({}),
    }
}

/// The ids a route names, made up: what a caller gets asking for an
/// object that does not exist.
fn missing_objects(w: &World) -> World {
    let made_up = || uuid::Uuid::new_v4().to_string();
    World {
        app: w.app.clone(),
        tokens: w.tokens.clone(),
        case_id: made_up(),
        instance_id: made_up(),
        attachment: w.attachment.clone(),
        assigned_id: w.assigned_id.clone(),
        spare_id: made_up(),
        site_id: w.site_id.clone(),
        device_token_id: w.device_token_id.clone(),
        device_key: w.device_key.clone(),
        version: w.version.clone(),
        consent_id: made_up(),
        request_id: made_up(),
    }
}

fn call(w: &World, method: &str, template: &str, caller: Caller) -> Response {
    let path = template
        .replace("{case}", &w.case_id)
        .replace("{instance}", &w.instance_id)
        .replace("{attachment}", &w.attachment)
        .replace("{user}", &w.spare_id)
        .replace("{site}", &w.site_id)
        .replace("{token}", &w.device_token_id)
        .replace("{devicekey}", &w.device_key)
        .replace("{version}", &w.version)
        .replace("{consent}", &w.consent_id)
        .replace("{request}", &w.request_id);
    let token = w.token(caller);
    let body = body_for(w, method, template, caller);
    match method {
        "GET" => w.app.get(&path, token),
        "POST" => w.app.post(&path, token, body),
        "PATCH" => w.app.patch(&path, token, body),
        "DELETE" => w.app.delete(&path, token),
        "PUT" if path.contains("/attachments/") => phone(&w.app, token).attach(
            &w.instance_id,
            &w.attachment,
            &attachment_content(&w.attachment),
        ),
        "PUT" => w.app.request("PUT", &path, Some(token), Some(&body)),
        "HEAD" => Response::from(
            common::agent()
                .head(w.app.url(&path))
                .header("Authorization", format!("Bearer {token}"))
                .call()
                .unwrap(),
        ),
        // A new referral from this caller's phone, alone or in a batch.
        "SEND" => phone(&w.app, token).send(
            &referral(&uuid::Uuid::new_v4().to_string())
                .child("Erlan Access")
                .envelope(),
        ),
        "BATCH" => {
            let sealed = phone(&w.app, token).encrypt(
                &referral(&uuid::Uuid::new_v4().to_string())
                    .child("Erlan Access")
                    .envelope(),
            );
            w.app.post(&path, token, json!({ "submissions": [sealed] }))
        }
        _ => unreachable!("{method}"),
    }
}

fn audit_actions_of(w: &World, request_id: &str) -> Vec<String> {
    let mut conn = w.app.conn();
    audit_log::table
        .filter(audit_log::request_id.eq(request_id))
        .select(audit_log::action)
        .load(&mut conn)
        .unwrap()
}

/// A problem's detail with the ids of `w` and `missing` put back as their
/// placeholders, to compare the answers about a real and a made-up object.
fn detail_of(res: &Response, w: &World, missing: &World) -> String {
    let mut detail = res.body["detail"].as_str().unwrap_or_default().to_string();
    for (a, b) in [
        (&w.case_id, &missing.case_id),
        (&w.instance_id, &missing.instance_id),
        (&w.spare_id, &missing.spare_id),
        (&w.consent_id, &missing.consent_id),
        (&w.request_id, &missing.request_id),
    ] {
        detail = detail
            .replace(a.as_str(), "{id}")
            .replace(b.as_str(), "{id}");
    }
    detail
}

#[test]
fn every_endpoint_as_every_role_answers_as_the_table_says_and_is_audited() {
    let w = world();
    let missing = missing_objects(&w);
    let mut wrong = Vec::new();
    for (method, path, expected) in MATRIX {
        for (caller, want) in CALLERS.iter().zip(expected) {
            let res = call(&w, method, path, *caller);
            let refused = res.status == 403 || *want == 'H';
            let ok = match want {
                'Y' => (200..300).contains(&res.status),
                'P' => res.status != 403 && res.status != 401,
                'H' => res.status == 404,
                _ => res.status == 403,
            };
            if !ok {
                wrong.push(format!(
                    "{method} {path} as {caller:?}: expected {want}, got {} {}",
                    res.status,
                    res.text.chars().take(200).collect::<String>()
                ));
                continue;
            }
            let request_id = res
                .header("x-request-id")
                .unwrap_or_else(|| panic!("{method} {path}: no request id"))
                .to_string();
            let actions = audit_actions_of(&w, &request_id);
            if *want == 'H' {
                // Word for word what a made-up id of the same route gets.
                let absent = call(&missing, method, path, *caller);
                assert_eq!(
                    (absent.status, absent.body["type"].clone()),
                    (404, res.body["type"].clone()),
                    "{method} {path} as {caller:?}: {} / {}",
                    res.text,
                    absent.text
                );
                assert_eq!(
                    detail_of(&res, &w, &missing),
                    detail_of(&absent, &w, &missing),
                    "{method} {path} as {caller:?}"
                );
                // Only the real object's refusal is one.
                let absent_id = absent.header("x-request-id").unwrap().to_string();
                assert!(
                    !audit_actions_of(&w, &absent_id).contains(&"access_refused".to_string()),
                    "{method} {path} as {caller:?}: a missing object audited as refused"
                );
            } else if refused && path.starts_with("/odk/") {
                // OpenRosa answers in its own XML, which Collect shows (a
                // HEAD answer has no body).
                assert!(
                    *method == "HEAD" || res.text.contains("nature=\"error\""),
                    "{method} {path} as {caller:?}: {}",
                    res.text
                );
            } else if refused {
                assert_eq!(
                    res.body["type"], "urn:casesync:problem:forbidden",
                    "{}",
                    res.text
                );
            }
            if refused {
                assert!(
                    actions.iter().any(|a| a == "access_refused"),
                    "{method} {path} as {caller:?}: refused but not audited ({actions:?})"
                );
            } else if reads_case_content(method, path) {
                assert!(
                    !actions.is_empty(),
                    "{method} {path} as {caller:?}: read but not audited"
                );
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "the policy differs from the table:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn reassignment_takes_the_case_and_its_sync_from_the_former_worker() {
    let w = world();
    let case = format!("/api/v1/cases/{}", w.case_id);
    let bolat_id = {
        let users = w.app.get("/api/v1/users", w.token(Caller::Admin));
        users.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["username"] == "bolat")
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let before = w.app.get("/api/v1/sync", w.token(Caller::Assigned));
    assert_eq!(before.body["cases"].as_array().unwrap().len(), 1);
    let cursor = before.body["cursor"].as_str().unwrap().to_string();

    let res = w.app.post(
        &format!("{case}/assignment"),
        w.token(Caller::Coordinator),
        json!({ "assignee": bolat_id }),
    );
    assert_eq!(res.status, 200, "{}", res.text);

    // Not theirs any more: told as for any case not theirs (#16).
    assert_eq!(w.app.get(&case, w.token(Caller::Assigned)).status, 404);
    assert_eq!(w.app.get(&case, w.token(Caller::Unassigned)).status, 200);
    let after = w.app.get(
        &format!("/api/v1/sync?cursor={cursor}"),
        w.token(Caller::Assigned),
    );
    assert_eq!(after.status, 200, "{}", after.text);
    assert_eq!(
        after.body["dropped_cases"],
        json!([w.case_id]),
        "{}",
        after.text
    );
    // The former worker may no longer submit for it either.
    let mut ia = fixture("kz.initial_assessment");
    ia["admin"]["child_removed"] = json!(false);
    ia["admin"].as_object_mut().unwrap().remove("removal_at");
    let res = phone(&w.app, w.token(Caller::Assigned)).send(&form_envelope(
        "kz.initial_assessment",
        &w.case_id,
        ia,
    ));
    assert_eq!(res.status, 403, "{}", res.text);
}

#[test]
fn break_glass_opens_a_case_of_another_site_for_a_while_and_loudly() {
    let w = world();
    let case = format!("/api/v1/cases/{}", w.case_id);
    let glass = format!("{case}/break-glass");
    let other = w.token(Caller::OtherCoordinator);
    assert_eq!(w.app.get(&case, other).status, 404);

    // A reason a reviewer can judge (words, not letters), and no longer
    // than the server allows.
    for nonsense in [
        "urgent",
        "aaaaaaaaaaaaaaaaaaaa",
        "urgent urgent urgent urgent urgent",
        "a a a a a a a a a a a a a a",
    ] {
        let res = w.app.post(&glass, other, json!({ "reason": nonsense }));
        assert_eq!(res.status, 422, "{nonsense:?}: {}", res.text);
        assert_eq!(res.error_pointers(), ["/reason"]);
    }
    let reason = "child presented at Shymkent police station at night";
    let res = w
        .app
        .post(&glass, other, json!({ "reason": reason, "minutes": 600 }));
    assert_eq!(res.error_pointers(), ["/minutes"]);
    // Nobody else breaks the glass: the case's own coordinator needs not,
    // workers and analysts may not.
    let own = w.app.post(
        &glass,
        w.token(Caller::Coordinator),
        json!({ "reason": reason }),
    );
    assert_eq!(own.status, 409, "{}", own.text);
    for caller in [Caller::Unassigned, Caller::Analyst, Caller::Admin] {
        let res = w
            .app
            .post(&glass, w.token(caller), json!({ "reason": reason }));
        assert_eq!(res.status, 403, "{caller:?}: {}", res.text);
        // Refused by role before any case is looked up: the same for a
        // case that does not exist.
        let made_up = format!("/api/v1/cases/{}/break-glass", uuid::Uuid::new_v4());
        let res = w
            .app
            .post(&made_up, w.token(caller), json!({ "reason": reason }));
        assert_eq!(res.status, 403, "{caller:?}: {}", res.text);
    }

    let res = w.app.post(&glass, other, json!({ "reason": reason }));
    assert_eq!(res.status, 201, "{}", res.text);
    let granted =
        chrono::DateTime::parse_from_rfc3339(res.body["granted_at"].as_str().unwrap()).unwrap();
    let expires =
        chrono::DateTime::parse_from_rfc3339(res.body["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!(
        (expires - granted).num_minutes(),
        180,
        "the default is 3 hours"
    );
    assert_eq!(res.body["renewal"], false);
    let first_expiry = res.body["expires_at"].as_str().unwrap().to_string();

    // One active grant per coordinator and case: a second is refused,
    // naming when the first ends.
    let again = w.app.post(
        &glass,
        other,
        json!({ "reason": "the police asked again about the same child" }),
    );
    let body = again.assert_problem(409, "conflict");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains(&first_expiry[..19]),
        "{body}"
    );

    // It reads, and each read says it was under break-glass.
    let read = w.app.get(&case, other);
    assert_eq!(read.status, 200, "{}", read.text);
    let request_id = read.header("x-request-id").unwrap().to_string();
    let mut conn = w.app.conn();
    let (action, detail): (String, Option<String>) = audit_log::table
        .filter(audit_log::request_id.eq(&request_id))
        .select((audit_log::action, audit_log::detail))
        .first(&mut conn)
        .unwrap();
    assert_eq!(
        (action.as_str(), detail.as_deref()),
        ("case_read", Some("break_glass"))
    );
    let opened: (Option<String>, Option<String>) = audit_log::table
        .filter(audit_log::action.eq("break_glass_opened"))
        .select((audit_log::object_id, audit_log::purpose))
        .first(&mut conn)
        .unwrap();
    assert_eq!(opened, (Some(w.case_id.clone()), Some(reason.to_string())));
    // It never writes or manages: those are answered as for any case that
    // is not theirs.
    let res = w.app.post(
        &format!("{case}/assignment"),
        other,
        json!({ "assignee": w.assigned_id }),
    );
    assert_eq!(res.status, 404, "{}", res.text);
    // The case's own coordinator sees who looked, and why.
    let list = w
        .app
        .get("/api/v1/break-glass", w.token(Caller::Coordinator));
    assert_eq!(list.status, 200, "{}", list.text);
    assert_eq!(list.body["items"][0]["reason"], reason);
    assert_eq!(list.body["items"][0]["username"], "shymkent");
    assert_eq!(list.body["items"][0]["active"], true);
    assert_eq!(list.body["items"][0]["renewal"], false);

    // Expired (moved into the past, as three hours would), it reads no more.
    diesel::update(break_glass_grants::table)
        .set(break_glass_grants::expires_at.eq(chrono::Utc::now().naive_utc()))
        .execute(&mut conn)
        .unwrap();
    assert_eq!(w.app.get(&case, other).status, 404);
    let list = w.app.get("/api/v1/break-glass", w.token(Caller::Admin));
    assert_eq!(list.body["items"][0]["active"], false);

    // Within a day it is a renewal: not for the same reason again, and
    // flagged for the reviewers.
    let res = w.app.post(
        &glass,
        other,
        json!({ "reason": "Child presented at Shymkent police station, at night!" }),
    );
    assert_eq!(res.status, 422, "{}", res.text);
    assert_eq!(res.error_pointers(), ["/reason"]);
    let renewed = "the court hearing was moved to this morning and needs the file";
    let res = w.app.post(&glass, other, json!({ "reason": renewed }));
    assert_eq!(res.status, 201, "{}", res.text);
    assert_eq!(res.body["renewal"], true);
    let list = w
        .app
        .get("/api/v1/break-glass", w.token(Caller::Coordinator));
    assert_eq!(list.body["items"][0]["reason"], renewed);
    assert_eq!(list.body["items"][0]["renewal"], true);
    assert_eq!(list.body["items"][1]["renewal"], false);
    let detail: Option<String> = audit_log::table
        .filter(audit_log::action.eq("break_glass_opened"))
        .filter(audit_log::purpose.eq(renewed))
        .select(audit_log::detail)
        .first(&mut conn)
        .unwrap();
    assert!(detail.unwrap().contains("renewal"));

    // Asked for at once, on many connections, one grant is made.
    diesel::update(break_glass_grants::table)
        .set(break_glass_grants::expires_at.eq(chrono::Utc::now().naive_utc()))
        .execute(&mut conn)
        .unwrap();
    let app: &TestApp = &w.app;
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let calls: Vec<_> = (0..6)
            .map(|i| {
                let glass = glass.clone();
                scope.spawn(move || {
                    let reason = format!("night shift call number {i} about this same child");
                    app.post(&glass, other, json!({ "reason": reason })).status
                })
            })
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 409),
        "{statuses:?}"
    );
}

/// The OpenAPI document is served without a token (it describes the API
/// and holds no data, as ODK Central's docs are public), is the copy
/// checked into docs/openapi.json, and describes every route of the matrix.
#[test]
fn the_openapi_document_is_public_and_is_the_checked_in_copy() {
    let app = TestApp::spawn();
    let res = app.request("GET", "/api/v1/openapi.json", None, None);
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.header("content-type"), Some("application/json"));
    let checked_in =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json"))
            .expect("docs/openapi.json is there");
    assert_eq!(
        res.text, checked_in,
        "regenerate with `CASESYNC_WRITE_OPENAPI=1 cargo test --lib openapi`"
    );
    assert_eq!(res.body["openapi"], "3.1.0");
    let paths = res.body["paths"].as_object().expect("paths");
    // OpenRosa's routes speak XML outside the JSON API and its document
    // (docs/api.md, "ODK Collect (OpenRosa)"; docs/odk.md).
    for (method, path, _) in MATRIX.iter().filter(|(_, p, _)| !p.starts_with("/odk/")) {
        let method = match *method {
            "SEND" | "BATCH" => "post",
            m => &m.to_ascii_lowercase(),
        };
        let path = path
            .split('?')
            .next()
            .unwrap()
            .trim_start_matches("/api/v1");
        let described = paths
            .iter()
            .any(|(template, item)| item.get(method).is_some() && template_matches(template, path));
        assert!(described, "{method} {path} is not in the OpenAPI document");
    }
}

/// Whether `/cases/{id}` describes `/cases/{case}` or `/cases/abc`.
fn template_matches(template: &str, path: &str) -> bool {
    let (t, p): (Vec<_>, Vec<_>) = (template.split('/').collect(), path.split('/').collect());
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| t == p || (t.starts_with('{') && t.ends_with('}')) || p.starts_with('{'))
}
