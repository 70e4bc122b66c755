//! Encrypted submissions over real HTTP with real RSA-OAEP/AES-GCM: stored
//! once, retries answered with the original receipt, bad input refused with
//! nothing stored.

use crate::common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use casesync::crypto::keys;
use casesync::db::schema::{cases, submissions};
use common::phone::{
    attachment_content, envelope, fixture, form_envelope, phone, Phone, SIGNATURE_NAME,
};
use common::{Response, TestApp};
use diesel::prelude::*;
use serde_json::{json, Value};

/// An admin and a field worker of CAM Almaty: (admin token, worker token).
fn setup(app: &TestApp) -> (String, String) {
    let admin = app.admin_token();
    let (_, worker) = app.user(&admin, "aigerim", "field_worker", &["KZ-CAM-ALA"]);
    (admin, worker)
}

#[test]
fn a_submission_opens_a_case_and_retries_get_the_original_receipt() {
    let app = TestApp::spawn();
    let (_, worker) = setup(&app);
    let phone = phone(&app, &worker);
    let case_id = uuid::Uuid::new_v4().to_string();
    let env = envelope(&case_id, fixture("kz.referral"));
    let jwe_text = phone.encrypt(&env);

    let first = phone.send_raw(&jwe_text);
    assert_eq!(first.status, 201, "{}", first.text);
    assert_eq!(first.body["instance_id"], env["instance_id"]);
    assert_eq!(first.body["case_id"], case_id.as_str());
    assert_eq!(first.body["status"], "awaiting_attachments");

    // The same JWE again, and the same envelope encrypted afresh: retries.
    let again = phone.send_raw(&jwe_text);
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.body, first.body);
    let reencrypted = phone.send(&env);
    assert_eq!(reencrypted.status, 200, "{}", reencrypted.text);
    assert_eq!(reencrypted.body, first.body);

    // Same instance id, other content: conflict.
    let mut changed = env.clone();
    changed["data"]["child"]["concern_description"] = json!("Something else.");
    phone.send(&changed).assert_problem(409, "conflict");

    assert_eq!(app.stored_submissions(), 1);
    let (raw, payload): (String, String) = submissions::table
        .select((submissions::raw_jwe, submissions::payload))
        .first(&mut app.conn())
        .unwrap();
    assert_eq!(raw, jwe_text, "the JWE is kept as received");
    assert_eq!(serde_json::from_str::<Value>(&payload).unwrap(), env);
    let assigned: Option<String> = cases::table
        .find(&case_id)
        .select(cases::assigned_to)
        .first(&mut app.conn())
        .unwrap();
    assert!(
        assigned.is_some(),
        "the worker who opened the case is assigned to it"
    );

    // An edit supersedes the earlier submission, which is kept.
    let mut edit = envelope(&case_id, fixture("kz.referral"));
    edit["supersedes"] = env["instance_id"].clone();
    edit["data"]["child"]["concern_description"] = json!("Corrected description.");
    let res = phone.send(&edit);
    assert_eq!(res.status, 201, "{}", res.text);
    let superseded_by: Option<String> = submissions::table
        .find(env["instance_id"].as_str().unwrap())
        .select(submissions::superseded_by)
        .first(&mut app.conn())
        .unwrap();
    assert_eq!(superseded_by.as_deref(), edit["instance_id"].as_str());
    assert_eq!(app.stored_submissions(), 2);
}

#[test]
fn bad_submissions_get_their_status_and_store_nothing() {
    let app = TestApp::spawn();
    let (admin, worker) = setup(&app);
    let (_, other_worker) = app.user(&admin, "other", "field_worker", &["KZ-CAM-ALA"]);
    let (_, viewer) = app.user(&admin, "viewer", "viewer", &[]);
    let jwk = app.get("/api/v1/programmes/kz/keys/current", &worker).body;
    let phone = Phone {
        app: &app,
        token: worker.clone(),
        jwk: jwk.clone(),
    };
    let case_id = uuid::Uuid::new_v4().to_string();
    let good = phone.encrypt(&envelope(&case_id, fixture("kz.referral")));
    let parts: Vec<&str> = good.split('.').collect();

    // Tampered ciphertext.
    let mut ct = URL_SAFE_NO_PAD.decode(parts[3]).unwrap();
    ct[5] ^= 0x40;
    let tampered = [
        parts[0],
        parts[1],
        parts[2],
        &URL_SAFE_NO_PAD.encode(ct),
        parts[4],
    ]
    .join(".");
    phone.send_raw(&tampered).assert_problem(400, "bad_request");
    // Unknown kid, other algorithms.
    for header in [
        json!({"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": "kz-19990101-deadbeef"}),
        json!({"alg": "RSA1_5", "enc": "A256GCM", "kid": jwk["kid"]}),
        json!({"alg": "dir", "enc": "A256GCM", "kid": jwk["kid"]}),
        json!({"alg": "none", "enc": "A256GCM", "kid": jwk["kid"]}),
    ] {
        let forged = [
            URL_SAFE_NO_PAD.encode(header.to_string()).as_str(),
            parts[1],
            parts[2],
            parts[3],
            parts[4],
        ]
        .join(".");
        phone.send_raw(&forged).assert_problem(400, "bad_request");
    }
    // Truncated, random bytes, wrong content type.
    phone
        .send_raw(&good[..good.len() / 2])
        .assert_problem(400, "bad_request");
    let noise: String = (0..2 * 1024 * 1024)
        .map(|i| (b'A' + (i * 7 % 26) as u8) as char)
        .collect();
    phone.send_raw(&noise).assert_problem(400, "bad_request");
    app.raw(
        "POST",
        "/api/v1/submissions",
        Some(&worker),
        "application/json",
        good.as_bytes(),
    )
    .assert_problem(415, "unsupported_media_type");

    // An unpublished version; data that fails validation.
    let mut env = envelope(&case_id, fixture("kz.referral"));
    env["form_version"] = json!("1999.9");
    let res = phone.send(&env);
    assert_eq!(
        res.assert_problem(422, "validation")["errors"][0]["pointer"],
        "/form_version"
    );
    let mut data = fixture("kz.referral");
    data["child"]
        .as_object_mut()
        .unwrap()
        .shift_remove("child_sex");
    let res = phone.send(&envelope(&case_id, data));
    assert_eq!(
        res.assert_problem(422, "validation")["errors"][0]["pointer"],
        "/data/child/child_sex"
    );

    // A viewer submits nothing; a worker cannot update another's case.
    Phone {
        app: &app,
        token: viewer,
        jwk: jwk.clone(),
    }
    .send(&envelope(
        &uuid::Uuid::new_v4().to_string(),
        fixture("kz.referral"),
    ))
    .assert_problem(403, "forbidden");
    assert_eq!(phone.send_raw(&good).status, 201);
    let update = json!({
        "instance_id": uuid::Uuid::new_v4().to_string(),
        "form_id": "kz.initial_assessment",
        "form_version": common::phone::shipped_version("kz.initial_assessment"),
        "case_id": case_id,
        "device_id": "tablet-9",
        "completed_at": "2026-03-03T12:00:00Z",
        "data": fixture("kz.initial_assessment")
    });
    Phone {
        app: &app,
        token: other_worker,
        jwk,
    }
    .send(&update)
    .assert_problem(403, "forbidden");
    assert_eq!(
        app.stored_submissions(),
        1,
        "only the one good submission is stored"
    );
}

#[test]
fn the_same_submission_sent_five_times_at_once_is_stored_once() {
    let app = TestApp::spawn();
    let (_, worker) = setup(&app);
    let phone = phone(&app, &worker);
    let jwe_text = phone.encrypt(&envelope(
        &uuid::Uuid::new_v4().to_string(),
        fixture("kz.referral"),
    ));
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..5)
            .map(|_| s.spawn(|| phone.send_raw(&jwe_text).status))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut sorted = statuses.clone();
    sorted.sort();
    assert_eq!(sorted, [200, 200, 200, 200, 201], "{statuses:?}");
    assert_eq!(app.stored_submissions(), 1);
}

#[test]
fn a_batch_answers_per_item() {
    let app = TestApp::spawn();
    let (_, worker) = setup(&app);
    let phone = phone(&app, &worker);
    let first = phone.encrypt(&envelope(
        &uuid::Uuid::new_v4().to_string(),
        fixture("kz.referral"),
    ));
    let second = phone.encrypt(&envelope(
        &uuid::Uuid::new_v4().to_string(),
        fixture("kz.referral"),
    ));
    let mut invalid = fixture("kz.referral");
    invalid["child"]["child_sex"] = json!("robot");
    let invalid = phone.encrypt(&envelope(&uuid::Uuid::new_v4().to_string(), invalid));
    let items = json!({ "submissions": [first, second, first, "not-a-jwe", invalid] });
    let res = app.post("/api/v1/submissions/batch", &worker, items);
    assert_eq!(res.status, 200, "{}", res.text);
    let statuses = res.batch_statuses();
    assert_eq!(statuses, [201, 201, 200, 400, 422]);
    assert_eq!(
        res.body["results"][4]["problem"]["errors"][0]["pointer"],
        "/data/child/child_sex"
    );
    assert_eq!(
        res.body["results"][2]["receipt"],
        res.body["results"][0]["receipt"]
    );
    assert_eq!(app.stored_submissions(), 2);

    app.post(
        "/api/v1/submissions/batch",
        &worker,
        json!({ "submissions": [] }),
    )
    .assert_problem(422, "validation");
    let too_many: Vec<&str> = (0..101).map(|_| "x").collect();
    app.post(
        "/api/v1/submissions/batch",
        &worker,
        json!({ "submissions": too_many }),
    )
    .assert_problem(422, "validation");
}

/// The committer writes a group of submissions in one transaction without a
/// savepoint each; when one fails it writes the group again with one each.
/// Two referrals opening the same new case, sent together, both pass the
/// checks before storing; the second fails only when stored. Each good form
/// is stored and audited once; each refused one leaves nothing behind.
#[test]
fn a_form_refused_while_stored_fails_alone_among_the_forms_stored_with_it() {
    let app = TestApp::spawn();
    let (_, worker) = setup(&app);
    let phone = phone(&app, &worker);
    let case_ids: Vec<String> = (0..12).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    // Two referrals per new case, all sent at once.
    let jwes: Vec<(String, String)> = case_ids
        .iter()
        .flat_map(|case_id| {
            (0..2).map(|_| {
                let envelope = envelope(case_id, fixture("kz.referral"));
                let instance = envelope["instance_id"].as_str().unwrap().to_string();
                (instance, phone.encrypt(&envelope))
            })
        })
        .collect();
    let answers: Vec<(&str, Response)> = std::thread::scope(|s| {
        let handles: Vec<_> = jwes
            .iter()
            .map(|(instance, jwe)| s.spawn(|| (instance.as_str(), phone.send_raw(jwe))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut refused: Vec<&str> = Vec::new();
    for pair in answers.chunks(2) {
        let mut statuses: Vec<u16> = pair.iter().map(|(_, res)| res.status).collect();
        statuses.sort();
        assert_eq!(statuses, [201, 422], "one referral opens the case");
        let (instance, res) = pair.iter().find(|(_, res)| res.status == 422).unwrap();
        assert_eq!(res.error_pointers(), ["/case_id"], "{}", res.text);
        refused.push(instance);
    }

    // A batch is queued in order, so its items share a group: the second
    // passes the checks (its case is not open yet) and fails when stored.
    let (first, second) = (
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
    );
    let batch = [
        envelope(&first, fixture("kz.referral")),
        envelope(&first, fixture("kz.referral")),
        envelope(&second, fixture("kz.referral")),
    ];
    let items: Vec<String> = batch.iter().map(|e| phone.encrypt(e)).collect();
    let res = app.post(
        "/api/v1/submissions/batch",
        &worker,
        json!({ "submissions": items }),
    );
    assert_eq!(res.status, 200, "{}", res.text);
    let statuses = res.batch_statuses();
    assert_eq!(statuses, [201, 422, 201], "{}", res.text);
    refused.push(batch[1]["instance_id"].as_str().unwrap());

    assert_eq!(app.stored_submissions(), 12 + 2);
    assert_eq!(app.audit_count("submission_received"), 12 + 2);
    let mut conn = app.conn();
    for instance in refused {
        let kept: i64 = submissions::table
            .filter(submissions::instance_id.eq(instance))
            .count()
            .get_result(&mut conn)
            .unwrap();
        assert_eq!(kept, 0, "a refused form leaves no row");
    }
    for case_id in case_ids.iter().chain([&first, &second]) {
        let case = app.case(&worker, case_id);
        assert_eq!(case["id"], case_id.as_str());
    }
    let opened: i64 = cases::table.count().get_result(&mut conn).unwrap();
    assert_eq!(opened, 12 + 2, "one case per new case id");
}

#[test]
fn attachments_complete_a_submission_and_are_read_back_by_those_allowed() {
    let app = TestApp::spawn();
    let (admin, worker) = setup(&app);
    let (_, other_worker) = app.user(&admin, "other", "field_worker", &["KZ-CAM-ALA"]);
    let (_, coordinator) = app.user(&admin, "manager", "coordinator", &["KZ-CAM-ALA"]);
    let (_, far_coordinator) = app.user(&admin, "far", "coordinator", &["KZ-CAM-SHY"]);
    let phone = phone(&app, &worker);
    let env = envelope(&uuid::Uuid::new_v4().to_string(), fixture("kz.referral"));
    let id = env["instance_id"].as_str().unwrap();
    assert_eq!(phone.send(&env).body["status"], "awaiting_attachments");
    let path = format!("/api/v1/submissions/{id}/attachments/{SIGNATURE_NAME}");

    // Not declared; not the declared content; not the sender; not read yet.
    phone
        .attach(id, "other.png", &attachment_content("other.png"))
        .assert_problem(404, "not_found");
    let res = phone.attach(id, SIGNATURE_NAME, b"another picture");
    res.assert_problem(422, "validation");
    assert_eq!(res.error_pointers(), ["/size", "/sha256"]);
    Phone {
        app: &app,
        token: other_worker.clone(),
        jwk: phone.jwk.clone(),
    }
    .attach(id, SIGNATURE_NAME, &attachment_content(SIGNATURE_NAME))
    .assert_problem(404, "not_found");
    app.get(&path, &worker).assert_problem(404, "not_found");
    phone
        .attach(
            &uuid::Uuid::new_v4().to_string(),
            SIGNATURE_NAME,
            &attachment_content(SIGNATURE_NAME),
        )
        .assert_problem(404, "not_found");

    // The right one completes the submission; again is a retry.
    let first = phone.attach(id, SIGNATURE_NAME, &attachment_content(SIGNATURE_NAME));
    assert_eq!(first.status, 201, "{}", first.text);
    assert_eq!(first.body["submission_status"], "complete");
    let again = phone.attach(id, SIGNATURE_NAME, &attachment_content(SIGNATURE_NAME));
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.body, first.body);
    let status: String = submissions::table
        .find(id)
        .select(submissions::status)
        .first(&mut app.conn())
        .unwrap();
    assert_eq!(status, "complete");
    let stored_jwe: Option<String> = casesync::db::schema::attachments::table
        .find((id, SIGNATURE_NAME))
        .select(casesync::db::schema::attachments::raw_jwe)
        .first(&mut app.conn())
        .unwrap();
    assert!(
        !stored_jwe.unwrap().contains("tablet"),
        "kept encrypted at rest"
    );
    // A retry of the submission now reports it complete.
    assert_eq!(phone.send(&env).body["status"], "complete");

    // Read back by the sender and the site's coordinator, nobody else.
    for token in [&worker, &coordinator] {
        let res = app.request("GET", &path, Some(token), None);
        assert_eq!(res.status, 200, "{}", res.text);
        assert_eq!(res.header("content-type"), Some("image/png"));
        assert_eq!(res.bytes, attachment_content(SIGNATURE_NAME));
    }
    for token in [&other_worker, &far_coordinator, &admin] {
        app.get(&path, token).assert_problem(404, "not_found");
    }
    let reads = casesync::audit::recent(&mut app.conn(), 50)
        .unwrap()
        .into_iter()
        .filter(|row| row.action == "attachment_read")
        .count();
    assert_eq!(reads, 2, "every read is audited");

    // The envelope must declare what the data names, well-formed.
    let mut undeclared = envelope(&uuid::Uuid::new_v4().to_string(), fixture("kz.referral"));
    undeclared["attachments"] = json!([]);
    let res = phone.send(&undeclared);
    res.assert_problem(422, "validation");
    assert_eq!(
        res.error_pointers(),
        ["/data/signoff/referrer_signature/signature"]
    );
    let mut malformed = envelope(&uuid::Uuid::new_v4().to_string(), fixture("kz.referral"));
    malformed["attachments"][0]["sha256"] = json!("not-hex");
    malformed["attachments"][0]["name"] = json!("../etc/passwd");
    let res = phone.send(&malformed);
    res.assert_problem(400, "bad_request");
    assert_eq!(
        res.error_pointers(),
        ["/attachments/0/name", "/attachments/0/sha256"]
    );
}

fn sync(app: &TestApp, token: &str, cursor: Option<&str>) -> Value {
    let path = match cursor {
        Some(c) => format!("/api/v1/sync?cursor={c}"),
        None => "/api/v1/sync".to_string(),
    };
    let res = app.get(&path, token);
    assert_eq!(res.status, 200, "{}", res.text);
    res.body
}

fn ids(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().or(c.as_str()).unwrap())
        .collect()
}

#[test]
fn sync_sends_each_phone_its_own_cases_and_then_only_changes() {
    let app = TestApp::spawn();
    let (admin, worker) = setup(&app);
    let (_, other_worker) = app.user(&admin, "other", "field_worker", &["KZ-CAM-ALA"]);
    let mine = uuid::Uuid::new_v4().to_string();
    let theirs = uuid::Uuid::new_v4().to_string();
    let my_phone = phone(&app, &worker);
    assert_eq!(
        my_phone
            .send(&envelope(&mine, fixture("kz.referral")))
            .status,
        201
    );
    let their_phone = phone(&app, &other_worker);
    assert_eq!(
        their_phone
            .send(&envelope(&theirs, fixture("kz.referral")))
            .status,
        201
    );

    // Everything this phone needs, and nothing of another worker's.
    let full = sync(&app, &worker, None);
    assert_eq!(full["full"], true);
    assert_eq!(ids(&full["cases"]), [mine.as_str()]);
    assert_eq!(full["cases"][0]["programme"], "kz");
    assert_eq!(full["cases"][0]["version"], 1);
    let forms = full["forms"].as_array().unwrap();
    assert!(forms
        .iter()
        .all(|f| f["form_id"].as_str().unwrap().starts_with("kz.")));
    assert!(forms
        .iter()
        .any(|f| f["form_id"] == "kz.referral" && f["sha256"].as_str().unwrap().len() == 64));
    assert_eq!(full["keys"].as_array().unwrap().len(), 1);
    assert_eq!(full["keys"][0]["kid"], my_phone.jwk["kid"]);
    assert!(
        full["cases"][0].get("child").is_none() && !full.to_string().contains("Daniyar"),
        "no personal data on the wire"
    );
    assert_eq!(
        ids(&sync(&app, &other_worker, None)["cases"]),
        [theirs.as_str()]
    );

    // Nothing changed: an empty answer with the same cursor.
    let cursor = full["cursor"].as_str().unwrap().to_string();
    let quiet = sync(&app, &worker, Some(&cursor));
    assert_eq!(
        (&quiet["full"], &quiet["more"], &quiet["cursor"]),
        (&json!(false), &json!(false), &json!(cursor))
    );
    for list in ["forms", "keys", "cases", "dropped_cases"] {
        assert_eq!(quiet[list], json!([]), "{list}");
    }

    // Another worker's case changing is not this phone's business; a
    // retired form and a new key are.
    let update = form_envelope(
        "kz.initial_assessment",
        &theirs,
        fixture("kz.initial_assessment"),
    );
    let res = their_phone.send(&update);
    assert_eq!(res.status, 201, "{}", res.text);
    let res = app.request(
        "POST",
        "/api/v1/forms/kz.file_review/versions/2021.1.1/retire",
        Some(&admin),
        None,
    );
    assert_eq!(res.status, 200, "{}", res.text);
    let kek = casesync::crypto::kek::Kek::load(&app.settings).unwrap();
    let new_key = keys::rotate(&mut app.conn(), &kek, "kz", 2048).unwrap();
    let changes = sync(&app, &worker, Some(&cursor));
    assert_eq!(changes["cases"], json!([]));
    assert_eq!(changes["forms"].as_array().unwrap().len(), 1);
    assert_eq!(changes["forms"][0]["form_id"], "kz.file_review");
    assert_eq!(changes["forms"][0]["status"], "retired");
    assert_eq!(changes["keys"][0]["kid"], new_key.kid.as_str());
    let cursor = changes["cursor"].as_str().unwrap().to_string();

    // Reassigned: dropped from my phone, added to theirs.
    let their_cursor = sync(&app, &other_worker, None)["cursor"]
        .as_str()
        .unwrap()
        .to_string();
    let mut conn = app.conn();
    let case = casesync::cases::find(&mut conn, &mine).unwrap().unwrap();
    let other_id = case_assignee(&app, &theirs);
    casesync::db::write_tx(&mut conn, |c| {
        casesync::cases::assign(c, &case, Some(&other_id))
    })
    .unwrap();
    let mine_now = sync(&app, &worker, Some(&cursor));
    assert_eq!(mine_now["dropped_cases"], json!([mine]));
    assert_eq!(mine_now["cases"], json!([]));
    let theirs_now = sync(&app, &other_worker, Some(&their_cursor));
    assert_eq!(ids(&theirs_now["cases"]), [mine.as_str()]);
    assert_eq!(theirs_now["cases"][0]["version"], 2);

    // A cursor this server did not give.
    for bad in ["nonsense", "djE6OTk5OTk5"] {
        app.get(&format!("/api/v1/sync?cursor={bad}"), &worker)
            .assert_problem(400, "bad_request");
    }
}

fn case_assignee(app: &TestApp, case_id: &str) -> String {
    cases::table
        .find(case_id)
        .select(cases::assigned_to)
        .first::<Option<String>>(&mut app.conn())
        .unwrap()
        .unwrap()
}

/// State, facts and deadlines of a case: what its forms make of it.
fn case_outcome(app: &TestApp, token: &str, case_id: &str) -> Value {
    let res = app.get(&format!("/api/v1/cases/{case_id}"), token);
    assert_eq!(res.status, 200, "{}", res.text);
    let deadlines: Vec<Value> = res.body["deadlines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| json!([d["rule"], d["occurrence"], d["due_at"], d["status"]]))
        .collect();
    json!({ "state": res.body["state"], "facts": res.body["facts"], "deadlines": deadlines })
}

/// A referral, the child record and the initial assessment of one case.
const OPENING_FORMS: [&str; 3] = ["kz.referral", "kz.child", "kz.initial_assessment"];

#[test]
fn a_batch_is_judged_in_order_so_forms_about_the_case_its_referral_opens_are_stored() {
    let app = TestApp::spawn();
    let (admin, worker) = setup(&app);
    let (_, coordinator) = app.user(&admin, "manager", "coordinator", &["KZ-CAM-ALA"]);
    let phone = phone(&app, &worker);

    // One by one: what the three forms make of a case.
    let one_by_one = uuid::Uuid::new_v4().to_string();
    for form in OPENING_FORMS {
        let res = phone.send(&form_envelope(form, &one_by_one, fixture(form)));
        assert_eq!(res.status, 201, "{form}: {}", res.text);
    }

    // The same three in one batch, the referral first: all stored.
    let batched = uuid::Uuid::new_v4().to_string();
    let items: Vec<String> = OPENING_FORMS
        .iter()
        .map(|form| phone.encrypt(&form_envelope(form, &batched, fixture(form))))
        .collect();
    let res = app.post(
        "/api/v1/submissions/batch",
        &worker,
        json!({ "submissions": items }),
    );
    assert_eq!(res.status, 200, "{}", res.text);
    let statuses: Vec<&Value> = res.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["status"])
        .collect();
    assert_eq!(
        statuses,
        [&json!(201), &json!(201), &json!(201)],
        "{}",
        res.text
    );
    assert_eq!(
        case_outcome(&app, &coordinator, &batched),
        case_outcome(&app, &coordinator, &one_by_one)
    );

    // A form about a case before the referral that opens it is held, as it
    // would be sent alone, and joins the case when the referral is stored.
    let reversed = uuid::Uuid::new_v4().to_string();
    let items: Vec<String> = ["kz.child", "kz.referral"]
        .iter()
        .map(|form| phone.encrypt(&form_envelope(form, &reversed, fixture(form))))
        .collect();
    let res = app.post(
        "/api/v1/submissions/batch",
        &worker,
        json!({ "submissions": items }),
    );
    assert_eq!(res.body["results"][0]["status"], 201, "{}", res.text);
    assert_eq!(
        res.body["results"][0]["receipt"]["status"], "pending_case",
        "{}",
        res.text
    );
    assert_eq!(res.body["results"][1]["status"], 201, "{}", res.text);

    // A referral refused leaves no case for the forms after it: they are
    // held, as each would be alone, until the fixed referral arrives.
    let refused = uuid::Uuid::new_v4().to_string();
    let mut bad_referral = fixture("kz.referral");
    bad_referral["child"]["child_sex"] = json!("not a sex");
    let items = [
        phone.encrypt(&form_envelope("kz.referral", &refused, bad_referral)),
        phone.encrypt(&form_envelope("kz.child", &refused, fixture("kz.child"))),
    ];
    let res = app.post(
        "/api/v1/submissions/batch",
        &worker,
        json!({ "submissions": items }),
    );
    assert_eq!(res.body["results"][0]["status"], 422, "{}", res.text);
    assert_eq!(res.body["results"][1]["status"], 201, "{}", res.text);
    assert_eq!(
        res.body["results"][1]["receipt"]["status"], "pending_case",
        "{}",
        res.text
    );
}

#[test]
fn the_collector_pushes_a_referral_and_its_follow_ups_in_one_default_batch() {
    use std::process::{Command, Stdio};
    let app = TestApp::spawn();
    let (admin, _) = setup(&app);
    let (_, coordinator) = app.user(&admin, "manager", "coordinator", &["KZ-CAM-ALA"]);
    let work = tempfile::tempdir().unwrap();
    let device = work.path().join("phone");
    let collect = |args: &[&str]| {
        let out = Command::new(common::bin::BIN)
            .arg("collect")
            .arg("--dir")
            .arg(&device)
            .args(args)
            .env("CASESYNC_COLLECT_PASSWORD", common::USER_PASSWORD)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "collect {args:?}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    collect(&["login", "--server", &app.url(""), "--username", "aigerim"]);
    collect(&["pull"]);
    let answers = |form: &str| {
        let data = fixture(form);
        for declared in common::phone::declarations(&data) {
            let name = declared["name"].as_str().unwrap();
            std::fs::write(work.path().join(name), format!("bytes of {name}")).unwrap();
        }
        let path = work.path().join(format!("{form}.json"));
        std::fs::write(&path, data.to_string()).unwrap();
        path
    };
    let referral = answers("kz.referral");
    let queued = collect(&["fill", "kz.referral", referral.to_str().unwrap()]);
    // "queued <instance> (case <case>)"
    let case_id = queued
        .split_whitespace()
        .nth(3)
        .unwrap()
        .trim_end_matches(')')
        .to_string();
    for form in &OPENING_FORMS[1..] {
        let path = answers(form);
        collect(&["fill", form, path.to_str().unwrap(), "--case", &case_id]);
    }
    let pushed = collect(&["push"]);
    assert!(pushed.contains("3 stored"), "{pushed}");
    assert!(pushed.contains("0 refused"), "{pushed}");
    let outcome = case_outcome(&app, &coordinator, &case_id);
    assert_ne!(outcome["state"], "referred", "{outcome:#}");
}

/// What `GET /submissions/held` shows `token`: (instance id, status) pairs.
fn held_list(app: &TestApp, token: &str, query: &str) -> Vec<(String, String)> {
    let res = app.get(&format!("/api/v1/submissions/held{query}"), token);
    assert_eq!(res.status, 200, "{}", res.text);
    res.body["held"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["instance_id"].as_str().unwrap().to_string(),
                h["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn submission_row(app: &TestApp, instance_id: &str) -> (Option<String>, Option<String>, String) {
    submissions::table
        .find(instance_id)
        .select((
            submissions::case_id,
            submissions::case_number,
            submissions::status,
        ))
        .first(&mut app.conn())
        .unwrap()
}

#[test]
fn a_follow_up_sent_before_its_referral_is_held_then_joins_the_case() {
    let app = TestApp::spawn();
    let (admin, worker) = setup(&app);
    let (_, coordinator) = app.user(&admin, "manager", "coordinator", &["KZ-CAM-ALA"]);
    let phone = phone(&app, &worker);
    let follow_up = "kz.initial_assessment";

    // In order: what the referral and the assessment make of a case.
    let in_order = uuid::Uuid::new_v4().to_string();
    let mut in_order_status = Value::Null;
    for form in ["kz.referral", follow_up] {
        let res = phone.send(&form_envelope(form, &in_order, fixture(form)));
        assert_eq!(res.status, 201, "{form}: {}", res.text);
        in_order_status = res.body["status"].clone();
    }
    // It declares a signature, still to come.
    assert_eq!(in_order_status, "awaiting_attachments");

    // The assessment first: stored and held, and a retry is 200, not 403.
    let reordered = uuid::Uuid::new_v4().to_string();
    let early = form_envelope(follow_up, &reordered, fixture(follow_up));
    let early_id = early["instance_id"].as_str().unwrap().to_string();
    let jwe_text = phone.encrypt(&early);
    let first = phone.send_raw(&jwe_text);
    assert_eq!(first.status, 201, "{}", first.text);
    assert_eq!(first.body["status"], "pending_case");
    assert_eq!(first.body["case_id"], reordered.as_str());
    let again = phone.send_raw(&jwe_text);
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.body, first.body);
    let mut changed = early.clone();
    changed["completed_at"] = json!("2026-03-02T11:00:00+05:00");
    phone.send(&changed).assert_problem(409, "conflict");
    assert_eq!(
        submission_row(&app, &early_id),
        (None, None, "pending_case".into())
    );
    app.get(&format!("/api/v1/cases/{reordered}"), &coordinator)
        .assert_problem(404, "not_found");
    assert!(
        held_list(&app, &coordinator, "").is_empty(),
        "a form held for less than pending_case_days is not listed"
    );

    // The referral opens the case; the held assessment joins it.
    let res = phone.send(&form_envelope(
        "kz.referral",
        &reordered,
        fixture("kz.referral"),
    ));
    assert_eq!(res.status, 201, "{}", res.text);
    let (case_id, number, status) = submission_row(&app, &early_id);
    assert_eq!(case_id.as_deref(), Some(reordered.as_str()));
    let case_number: Option<String> = cases::table
        .find(&reordered)
        .select(cases::number)
        .first(&mut app.conn())
        .unwrap();
    assert_eq!(
        number, case_number,
        "the held form carries its case's number"
    );
    assert_eq!(status, "awaiting_attachments", "as it would be in order");
    let timeline = app.get(&format!("/api/v1/cases/{reordered}/timeline"), &coordinator);
    assert_eq!(timeline.status, 200, "{}", timeline.text);
    assert!(
        timeline.text.contains(&early_id),
        "the held form is on the case's timeline: {}",
        timeline.text
    );
    assert_eq!(
        case_outcome(&app, &coordinator, &reordered),
        case_outcome(&app, &coordinator, &in_order)
    );
    // A retry after it joined is still a retry.
    let retried = phone.send_raw(&jwe_text);
    assert_eq!(retried.status, 200, "{}", retried.text);
    assert_eq!(retried.body["status"], "awaiting_attachments");

    // Its attachments may come while it is held: it stays held, and is
    // complete once it joins its case.
    let later = uuid::Uuid::new_v4().to_string();
    let early = form_envelope(follow_up, &later, fixture(follow_up));
    let early_id = early["instance_id"].as_str().unwrap().to_string();
    assert_eq!(phone.send(&early).status, 201);
    let names = early["attachments"].as_array().unwrap();
    assert!(!names.is_empty());
    for declared in names {
        let name = declared["name"].as_str().unwrap();
        let res = phone.attach(&early_id, name, &attachment_content(name));
        assert_eq!(res.status, 201, "{}", res.text);
        assert_eq!(res.body["submission_status"], "pending_case");
    }
    let res = phone.send(&form_envelope(
        "kz.referral",
        &later,
        fixture("kz.referral"),
    ));
    assert_eq!(res.status, 201, "{}", res.text);
    assert_eq!(submission_row(&app, &early_id).2, "complete");
}

#[test]
fn a_held_form_whose_sender_may_not_work_on_the_case_is_refused_when_it_opens() {
    let app = TestApp::spawn();
    let (admin, worker) = setup(&app);
    let (_, coordinator) = app.user(&admin, "manager", "coordinator", &["KZ-CAM-ALA"]);
    let (_, elsewhere_coordinator) =
        app.user(&admin, "shymkent_manager", "coordinator", &["KZ-CAM-SHY"]);
    let (elsewhere_id, elsewhere) =
        app.user(&admin, "shymkent_worker", "field_worker", &["KZ-CAM-SHY"]);
    let form = "kz.initial_assessment";
    let case_id = uuid::Uuid::new_v4().to_string();

    // A worker of another site sends a form about a case not seen yet.
    let stranger = phone(&app, &elsewhere);
    let early = form_envelope(form, &case_id, fixture(form));
    let early_id = early["instance_id"].as_str().unwrap().to_string();
    let res = stranger.send(&early);
    assert_eq!(res.status, 201, "{}", res.text);
    assert_eq!(res.body["status"], "pending_case");

    // A worker of Almaty opens the case: the held form may not join it.
    let res = phone(&app, &worker).send(&form_envelope(
        "kz.referral",
        &case_id,
        fixture("kz.referral"),
    ));
    assert_eq!(res.status, 201, "{}", res.text);
    assert_eq!(
        submission_row(&app, &early_id),
        (None, None, "refused".into())
    );
    let timeline = app.get(&format!("/api/v1/cases/{case_id}/timeline"), &coordinator);
    assert!(!timeline.text.contains(&early_id), "{}", timeline.text);
    let state: String = cases::table
        .find(&case_id)
        .select(cases::state)
        .first(&mut app.conn())
        .unwrap();
    assert_eq!(state, "referred", "the refused assessment is not folded");

    // The refusal is on record, as its sender's.
    use casesync::db::schema::audit_log;
    let refusals: Vec<(Option<String>, Option<String>)> = audit_log::table
        .filter(audit_log::action.eq("access_refused"))
        .filter(audit_log::object_id.eq(&early_id))
        .select((audit_log::actor_id, audit_log::detail))
        .load(&mut app.conn())
        .unwrap();
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert_eq!(refusals[0].0.as_deref(), Some(elsewhere_id.as_str()));

    // Shown to the case's site's coordinators (and the sender's).
    let refused = vec![(early_id.clone(), "refused".to_string())];
    assert_eq!(held_list(&app, &coordinator, ""), refused);
    assert_eq!(held_list(&app, &coordinator, "?site=KZ-CAM-ALA"), refused);
    assert_eq!(held_list(&app, &elsewhere_coordinator, ""), refused);
    app.get(
        "/api/v1/submissions/held?site=KZ-CAM-ALA",
        &elsewhere_coordinator,
    )
    .assert_problem(403, "forbidden");
    app.get("/api/v1/submissions/held?site=NO-SUCH-SITE", &coordinator)
        .assert_problem(422, "validation");
    // Its sender's retry is refused like any form about a case not theirs.
    stranger.send(&early).assert_problem(403, "forbidden");
}

#[test]
fn a_form_held_longer_than_pending_case_days_is_listed_to_coordinators() {
    let app = TestApp::spawn();
    let (admin, worker) = setup(&app);
    let (_, coordinator) = app.user(&admin, "manager", "coordinator", &["KZ-CAM-ALA"]);
    let (_, elsewhere_coordinator) =
        app.user(&admin, "shymkent_manager", "coordinator", &["KZ-CAM-SHY"]);
    let form = "kz.initial_assessment";
    let waiting = form_envelope(form, &uuid::Uuid::new_v4().to_string(), fixture(form));
    let waiting_id = waiting["instance_id"].as_str().unwrap().to_string();
    let res = phone(&app, &worker).send(&waiting);
    assert_eq!(res.status, 201, "{}", res.text);
    assert!(held_list(&app, &coordinator, "").is_empty());

    // Received 15 days ago (the default pending_case_days is 14).
    let received: chrono::NaiveDateTime = submissions::table
        .find(&waiting_id)
        .select(submissions::received_at)
        .first(&mut app.conn())
        .unwrap();
    diesel::update(submissions::table.find(&waiting_id))
        .set(submissions::received_at.eq(received - chrono::Duration::days(15)))
        .execute(&mut app.conn())
        .unwrap();
    let res = app.get("/api/v1/submissions/held?site=KZ-CAM-ALA", &coordinator);
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["pending_case_days"], 14);
    let held = &res.body["held"][0];
    assert_eq!(held["instance_id"], waiting_id.as_str());
    assert_eq!(held["status"], "pending_case");
    assert_eq!(held["username"], "aigerim");
    assert_eq!(held["days_held"], 15);
    assert!(
        held_list(&app, &elsewhere_coordinator, "").is_empty(),
        "another site's coordinators do not see it"
    );
    // Nothing is dropped: it still waits for its case.
    assert_eq!(submission_row(&app, &waiting_id).2, "pending_case");
}

/// The group committer writes through a connection of its own. On
/// PostgreSQL the database server may close it while it sits idle (a
/// restart, an idle timeout, a failover): it is checked and opened again
/// before the next group, so the next phone is not answered 503 once.
/// SQLite has no server to close it: skipped there.
#[test]
fn the_committers_connection_closed_while_idle_is_opened_again_before_the_next_form() {
    let app = TestApp::spawn();
    if !app.shared.db.is_postgres() {
        return;
    }
    let staff = app.staff().build();
    let worker = phone(&app, &staff.worker);
    let first = uuid::Uuid::new_v4().to_string();
    common::build::submit(
        &worker,
        "kz.referral",
        &first,
        common::build::referral(&first).data(),
    );
    // Every other connection to this test's database ends, as at a restart.
    diesel::sql_query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .execute(&mut app.conn())
    .unwrap();
    // Longer than the committer's idle check (1 s).
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let second = uuid::Uuid::new_v4().to_string();
    common::build::submit(
        &worker,
        "kz.referral",
        &second,
        common::build::referral(&second).data(),
    );
}
