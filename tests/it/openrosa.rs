//! The OpenRosa endpoints for ODK Collect (docs/odk.md, "The OpenRosa
//! endpoints"), over real HTTP: the Basic challenge and device-token
//! sign-in, the key path (and its token never in a log), formList and the
//! exact XForm bytes, HEAD and POST /submission with Collect's encryption,
//! the case an ODK referral opens equal to the one a JWE opens, and the
//! bad-input set each with its status and nothing stored.

use crate::common;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use casesync::crypto::{keys, odk};
use casesync::odk::{instance, nodes::FormTable};
use common::bin::serve;
use common::build::referral;
use common::odk::{
    basic, comparable, device_token, get, media_of, multipart_body, parts_of, post_body, Part,
    BOUNDARY,
};
use common::phone::{attachment_content, declarations, fixture, form_envelope, phone};
use common::{agent, Response, TestApp, TestDb};
use md5::{Digest, Md5};
use serde_json::{json, Value};

const STARTED: &str = "2026-03-02T10:00:00.000+05:00";
const COMPLETED: &str = "2026-03-02T10:40:00.000+05:00";

/// A field worker of KZ-CAM-ALA with a device token: (id, session, device).
fn worker(app: &TestApp, admin: &str, username: &str) -> (String, String, String) {
    let (id, session) = app.user(admin, username, "field_worker", &["KZ-CAM-ALA"]);
    let device = device_token(app, admin, &id);
    (id, session, device)
}

fn head(app: &TestApp, path: &str, auth: Option<&str>) -> Response {
    let mut req = agent().head(app.url(path));
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    Response::from(req.call().unwrap())
}

fn post(app: &TestApp, auth: &str, parts: &[Part]) -> Response {
    post_body(
        app,
        "/odk/kz/submission?deviceID=tablet-7",
        auth,
        &multipart_body(parts),
    )
}

fn shipped_table(form_id: &str) -> FormTable {
    let set = casesync::forms::definitions::shipped();
    let form = set
        .forms
        .iter()
        .map(|f| casesync::forms::check::check(&f.document, &set.resources).unwrap())
        .find(|f| f.meta.id == form_id)
        .unwrap();
    FormTable::build(&form.document).unwrap()
}

/// A filled instance of `form_id` as a phone writes it: the answers, the
/// start and end times, the hidden case id, the instanceID.
fn instance_xml(form_id: &str, answers: &Value, case_id: &str, instance_id: &str) -> String {
    let xml = instance::to_xml(
        &shipped_table(form_id),
        answers.as_object().unwrap(),
        &format!("uuid:{instance_id}"),
    );
    xml.replace(
        "<meta><instanceID>",
        &format!(
            "<meta><timeStart>{STARTED}</timeStart><timeEnd>{COMPLETED}</timeEnd><case_id>{case_id}</case_id><instanceID>"
        ),
    )
}

fn kz_key(app: &TestApp, session: &str) -> aws_lc_rs::rsa::PublicEncryptingKey {
    let jwk = app.get("/api/v1/programmes/kz/keys/current", session).body;
    keys::public_key_from_jwk(&jwk).unwrap()
}

/// `answers` of `form_id` encrypted as Collect does for the KZ key.
fn encrypted(
    app: &TestApp,
    session: &str,
    form_id: &str,
    answers: &Value,
    case_id: &str,
    instance_id: &str,
) -> odk::Encrypted {
    let xml = instance_xml(form_id, answers, case_id, instance_id);
    encrypted_xml(app, session, form_id, answers, instance_id, &xml)
}

/// [`encrypted`] for an edit on the phone of `deprecated` (Collect's
/// `meta/deprecatedID`).
fn encrypted_edit(
    app: &TestApp,
    session: &str,
    form_id: &str,
    answers: &Value,
    case_id: &str,
    instance_id: &str,
    deprecated: &str,
) -> odk::Encrypted {
    let xml = instance_xml(form_id, answers, case_id, instance_id).replace(
        "<instanceID>",
        &format!("<deprecatedID>uuid:{deprecated}</deprecatedID><instanceID>"),
    );
    encrypted_xml(app, session, form_id, answers, instance_id, &xml)
}

fn encrypted_xml(
    app: &TestApp,
    session: &str,
    form_id: &str,
    answers: &Value,
    instance_id: &str,
    xml: &str,
) -> odk::Encrypted {
    let media = media_of(answers);
    let media: Vec<(&str, &[u8])> = media
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    odk::encrypt(
        &kz_key(app, session),
        form_id,
        Some(&crate::common::phone::shipped_version(form_id)),
        &format!("uuid:{instance_id}"),
        xml.as_bytes(),
        &media,
    )
}

fn assert_openrosa_error(res: &Response, status: u16) {
    assert_eq!(res.status, status, "{}", res.text);
    assert_eq!(res.header("x-openrosa-version"), Some("1.0"));
    assert!(
        res.text.contains("<message nature=\"error\">"),
        "{}",
        res.text
    );
}

#[test]
fn collect_is_challenged_then_signs_in_with_the_device_token() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (_, session, device) = worker(&app, &admin, "aigerim");

    // No credentials: the challenge Collect waits for.
    for res in [
        get(&app, "/odk/kz/formList", None),
        head(&app, "/odk/kz/submission", None),
    ] {
        assert_eq!(res.status, 401, "{}", res.text);
        assert_eq!(
            res.header("www-authenticate"),
            Some("Basic realm=\"casesync\"")
        );
        assert_eq!(res.header("x-openrosa-version"), Some("1.0"));
        assert!(res.header("date").is_some());
    }
    // Wrong: the password (never taken here), another user's name, a
    // session token as the Basic password.
    for auth in [
        basic("aigerim", common::USER_PASSWORD),
        basic("bolat", &device),
        basic("aigerim", &session),
        basic("aigerim", "cs_not-a-token"),
    ] {
        let res = get(&app, "/odk/kz/formList", Some(&auth));
        assert_eq!(res.status, 401, "{auth}: {}", res.text);
        assert!(res.header("www-authenticate").is_some());
    }
    let auth = basic("aigerim", &device);
    let res = get(&app, "/odk/kz/formList", Some(&auth));
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.header("x-openrosa-version"), Some("1.0"));
    assert!(res.header("date").is_some());
    assert_eq!(res.header("content-type"), Some("text/xml; charset=utf-8"));
    // The phone's use is stamped on its token (shown on the worker's page)
    // by the committer, behind the answer: the request itself writes
    // nothing.
    let stamped = (0..100).any(|_| {
        let tokens = app.get("/api/v1/tokens", &admin);
        let used = tokens.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["label"] == "ODK Collect" && !t["last_used_at"].is_null());
        if !used {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        used
    });
    assert!(stamped, "the device token's last use was never recorded");

    // HEAD /submission: 204 with the largest upload.
    let res = head(&app, "/odk/kz/submission", Some(&auth));
    assert_eq!(res.status, 204, "{}", res.text);
    let accepted = app.settings.max_submission_bytes + app.settings.max_attachment_bytes as usize;
    assert_eq!(
        res.header("x-openrosa-accept-content-length"),
        Some(accepted.to_string().as_str())
    );
    assert_eq!(res.header("x-openrosa-version"), Some("1.0"));

    // A revoked token is refused at once.
    let tokens = app.get("/api/v1/tokens", &admin);
    let id = tokens.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["kind"] == "device")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        app.delete(&format!("/api/v1/tokens/{id}"), &admin).status,
        200
    );
    assert_eq!(get(&app, "/odk/kz/formList", Some(&auth)).status, 401);
}

#[test]
fn form_list_offers_the_programmes_forms_with_the_md5_of_the_bytes_served() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (_, _, device) = worker(&app, &admin, "aigerim");
    let auth = basic("aigerim", &device);
    let list = get(&app, "/odk/kz/formList", Some(&auth));
    assert_eq!(list.status, 200, "{}", list.text);
    assert!(list
        .text
        .contains("<xforms xmlns=\"http://openrosa.org/xforms/xformsList\">"));
    let stored = casesync::odk::store::current(&mut app.conn(), "kz").unwrap();
    assert_eq!(list.text.matches("<xform>").count(), stored.len());
    assert!(!list.text.contains("bt."), "only the programme's forms");
    assert!(list
        .text
        .contains("<downloadUrl>https://casesync.test/odk/kz/forms/kz.referral.xml</downloadUrl>"));
    assert!(list.text.contains("<version>2021.1.1</version>"));

    let one = get(&app, "/odk/kz/formList?formID=kz.referral", Some(&auth));
    assert_eq!(one.text.matches("<xform>").count(), 1, "{}", one.text);
    let hash = one
        .text
        .split_once("<hash>md5:")
        .unwrap()
        .1
        .split_once("</hash>")
        .unwrap()
        .0
        .to_string();
    let form = get(&app, "/odk/kz/forms/kz.referral.xml", Some(&auth));
    assert_eq!(form.status, 200, "{}", form.text);
    assert_eq!(form.header("content-type"), Some("text/xml; charset=utf-8"));
    assert_eq!(hex::encode(Md5::digest(&form.bytes)), hash);
    assert!(form.text.contains("base64RsaPublicKey="));

    let manifest = get(&app, "/odk/kz/forms/kz.referral/manifest", Some(&auth));
    assert_eq!(manifest.status, 200);
    assert_eq!(
        manifest.text,
        "<manifest xmlns=\"http://openrosa.org/xforms/xformsManifest\"/>"
    );

    // Unknown programme, form, or a form of another programme: 404.
    for path in [
        "/odk/xx/formList",
        "/odk/kz/forms/kz.nothing.xml",
        "/odk/kz/forms/bt.registration.xml",
        "/odk/kz/forms/kz.nothing/manifest",
        "/odk/kz/forms/kz.referral",
    ] {
        let res = get(&app, path, Some(&auth));
        assert_eq!(res.status, 404, "{path}: {}", res.text);
    }
    // A KZ worker is not set up for BT.
    assert_openrosa_error(&get(&app, "/odk/bt/formList", Some(&auth)), 403);
}

#[test]
fn the_key_path_signs_in_without_a_challenge_and_links_with_the_key() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (_, _, device) = worker(&app, &admin, "aigerim");
    let list = get(&app, &format!("/odk/key/{device}/kz/formList"), None);
    assert_eq!(list.status, 200, "{}", list.text);
    assert!(list.text.contains(&format!(
        "<downloadUrl>https://casesync.test/odk/key/{device}/kz/forms/kz.referral.xml</downloadUrl>"
    )));
    let form = get(
        &app,
        &format!("/odk/key/{device}/kz/forms/kz.referral.xml"),
        None,
    );
    assert_eq!(form.status, 200);
    let res = head(&app, &format!("/odk/key/{device}/kz/submission"), None);
    assert_eq!(res.status, 204);
    let res = get(&app, "/odk/key/cs_made-up/kz/formList", None);
    assert_eq!(res.status, 401);
}

/// Hardening (#17): the token of a key path is in no log line, whatever
/// the answer.
#[test]
fn a_key_path_leaves_no_token_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new();
    let server = serve(dir.path(), &db, &[("RUST_LOG", "trace")]);
    let secret = "cs_thisisakeypathtokenthatmustnotbelogged";
    for path in [
        format!("/odk/key/{secret}/kz/formList"),
        format!("/odk/key/{secret}/kz/submission"),
        format!("/odk/key/{secret}/kz/forms/kz.referral.xml"),
        format!("/odk/key/{secret}/nowhere"),
    ] {
        let res = agent()
            .get(format!("{}{path}", server.base))
            .call()
            .unwrap();
        assert!(res.status().as_u16() >= 400);
    }
    server.terminate();
    let logs = server.logs();
    assert!(
        logs.iter()
            .any(|l| l.contains("/odk/key/[redacted]/kz/formList")),
        "the requests were logged, with their path redacted"
    );
    assert!(
        !logs.iter().any(|l| l.contains("thisisakeypathtoken")),
        "a log line holds the key path's token"
    );
    assert!(server.wait(std::time::Duration::from_secs(20)).success());
}

#[test]
fn an_encrypted_referral_opens_the_case_a_jwe_of_the_same_answers_opens() {
    let case_id = uuid::Uuid::new_v4().to_string();
    let instance_id = uuid::Uuid::new_v4().to_string();
    let answers = referral(&case_id).child("Dana Collect").data();

    // As a JWE, on one server.
    let jwe_app = TestApp::spawn();
    let admin = jwe_app.admin_token();
    let (_, session, _) = worker(&jwe_app, &admin, "aigerim");
    let mut envelope = form_envelope("kz.referral", &case_id, answers.clone());
    envelope["instance_id"] = json!(instance_id);
    envelope["started_at"] = json!(STARTED);
    envelope["completed_at"] = json!(COMPLETED);
    let p = phone(&jwe_app, &session);
    assert_eq!(p.send(&envelope).status, 201);
    for d in declarations(&answers) {
        let name = d["name"].as_str().unwrap();
        let res = p.attach(&instance_id, name, &attachment_content(name));
        assert_eq!(res.status, 201, "{}", res.text);
    }
    let jwe_case = jwe_app.case(&session, &case_id);
    let jwe_timeline = jwe_app.get(&format!("/api/v1/cases/{case_id}/timeline"), &session);

    // As ODK Collect sends it, on another.
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (_, session, device) = worker(&app, &admin, "aigerim");
    let auth = basic("aigerim", &device);
    let sent = encrypted(
        &app,
        &session,
        "kz.referral",
        &answers,
        &case_id,
        &instance_id,
    );
    let before = app.stored_submissions();
    let res = post(&app, &auth, &parts_of(&sent));
    assert_eq!(res.status, 201, "{}", res.text);
    assert_eq!(
        res.text,
        "<OpenRosaResponse xmlns=\"http://openrosa.org/http/response\" items=\"0\"><message nature=\"\">Received</message></OpenRosaResponse>"
    );
    assert_eq!(res.header("x-openrosa-version"), Some("1.0"));
    assert_eq!(app.stored_submissions(), before + 1);
    let odk_case = app.case(&session, &case_id);
    let odk_timeline = app.get(&format!("/api/v1/cases/{case_id}/timeline"), &session);
    assert_eq!(comparable(odk_case), comparable(jwe_case));
    assert_eq!(comparable(odk_timeline.body), comparable(jwe_timeline.body));

    // The attachment arrived with it, and opens as any attachment does.
    let name = declarations(&answers)[0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let file = app.get(
        &format!("/api/v1/submissions/{instance_id}/attachments/{name}"),
        &session,
    );
    assert_eq!(file.status, 200, "{}", file.text);
    assert_eq!(file.bytes, attachment_content(&name));

    // The raw record is kept encrypted: no answer in it.
    use casesync::db::schema::submissions;
    use diesel::prelude::*;
    let (raw, status): (String, String) = submissions::table
        .find(&instance_id)
        .select((submissions::raw_jwe, submissions::status))
        .first(&mut app.conn())
        .unwrap();
    assert!(!raw.contains("Dana"));
    assert_eq!(raw.split('.').count(), 5, "a JWE in compact form");
    assert_eq!(status, "complete");

    // The resend of the same upload: 201 again, nothing new stored.
    let again = post(&app, &auth, &parts_of(&sent));
    assert_eq!(again.status, 201, "{}", again.text);
    assert_eq!(app.stored_submissions(), before + 1);
    // The same instanceID with other answers: 409.
    let other = referral(&case_id).child("Dana Changed").data();
    let changed = encrypted(
        &app,
        &session,
        "kz.referral",
        &other,
        &case_id,
        &instance_id,
    );
    assert_openrosa_error(&post(&app, &auth, &parts_of(&changed)), 409);
    assert_eq!(app.stored_submissions(), before + 1);

    // A follow-up about the case, from the same phone.
    let mut ia = fixture("kz.initial_assessment");
    ia["admin"]["child_removed"] = json!(false);
    ia["admin"].as_object_mut().unwrap().remove("removal_at");
    let follow_up = uuid::Uuid::new_v4().to_string();
    let sent = encrypted(
        &app,
        &session,
        "kz.initial_assessment",
        &ia,
        &case_id,
        &follow_up,
    );
    let res = post(&app, &auth, &parts_of(&sent));
    assert_eq!(res.status, 201, "{}", res.text);
    let timeline = app.get(&format!("/api/v1/cases/{case_id}/timeline"), &session);
    assert!(
        timeline.text.contains(&follow_up),
        "the follow-up is on the case's timeline: {}",
        timeline.text
    );

    // Another worker of the site, not assigned the case: 403.
    let (_, bolat_session, bolat_device) = worker(&app, &admin, "bolat");
    let third = uuid::Uuid::new_v4().to_string();
    let sent = encrypted(
        &app,
        &bolat_session,
        "kz.initial_assessment",
        &ia,
        &case_id,
        &third,
    );
    let res = post(&app, &basic("bolat", &bolat_device), &parts_of(&sent));
    assert_openrosa_error(&res, 403);
    assert!(!res.text.contains("Dana"));
}

#[test]
fn bad_uploads_are_refused_with_their_status_and_store_nothing() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (_, session, device) = worker(&app, &admin, "aigerim");
    let auth = basic("aigerim", &device);
    let case_id = uuid::Uuid::new_v4().to_string();
    let answers = referral(&case_id).child("Dana Refused").data();
    let good = |instance_id: &str| {
        encrypted(
            &app,
            &session,
            "kz.referral",
            &answers,
            &case_id,
            instance_id,
        )
    };
    let id = uuid::Uuid::new_v4().to_string();
    let before = app.stored_submissions();
    let file_of = |e: &mut odk::Encrypted, name: &str| -> usize {
        e.files.iter().position(|f| f.name == name).unwrap()
    };

    // Encrypted for another key.
    let other_key = {
        let private =
            aws_lc_rs::rsa::PrivateDecryptingKey::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .unwrap();
        private.public_key()
    };
    let xml = instance_xml("kz.referral", &answers, &case_id, &id);
    let media = media_of(&answers);
    let media: Vec<(&str, &[u8])> = media
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    let wrong_key = odk::encrypt(
        &other_key,
        "kz.referral",
        Some("2021.1.1"),
        &format!("uuid:{id}"),
        xml.as_bytes(),
        &media,
    );
    let mut cases: Vec<(&str, Vec<u8>, u16)> =
        vec![("wrong key", multipart_body(&parts_of(&wrong_key)), 400)];

    // K wrapped with OAEP SHA-256 but MGF1-SHA-1 (the JCE's reading of
    // the cipher's name): not what Collect sends, refused (docs/odk.md).
    let public = kz_key(&app, &session);
    let k = [7u8; 32];
    let sha1_wrapped = STANDARD.encode(odk::mgf1_sha1::wrap(&public, &k));
    let mgf1_sha1 = odk::encrypt_with(
        &public,
        &k,
        &sha1_wrapped,
        "kz.referral",
        Some("2021.1.1"),
        &format!("uuid:{id}"),
        xml.as_bytes(),
        &media,
    );
    cases.push((
        "MGF1-SHA-1 wrap",
        multipart_body(&parts_of(&mgf1_sha1)),
        400,
    ));

    // Two files encrypted in one order, the manifest listing the other.
    let two: Vec<(&str, &[u8])> = vec![
        ("first-photo.jpg", b"the first picture".as_slice()),
        ("second-photo.jpg", b"the second picture".as_slice()),
    ];
    let in_order = odk::encrypt(
        &public,
        "kz.referral",
        Some("2021.1.1"),
        &format!("uuid:{id}"),
        xml.as_bytes(),
        &two,
    );
    let mut parts = parts_of(&in_order);
    let listed = in_order.manifest.replace(
        "<media><file>first-photo.jpg.enc</file></media><media><file>second-photo.jpg.enc</file></media>",
        "<media><file>second-photo.jpg.enc</file></media><media><file>first-photo.jpg.enc</file></media>",
    );
    assert_ne!(listed, in_order.manifest);
    parts[0].1 = listed.into_bytes();
    cases.push(("files out of manifest order", multipart_body(&parts), 400));

    // Bad padding: the last byte of the form flipped.
    let mut bad_pad = good(&id);
    let i = file_of(&mut bad_pad, "submission.xml.enc");
    *bad_pad.files[i].bytes.last_mut().unwrap() ^= 0x20;
    cases.push(("bad padding", multipart_body(&parts_of(&bad_pad)), 400));

    // A correctly signed manifest around a form of another instanceID.
    let wrapped = odk::wrap_key(&public, &k);
    let swapped = odk::encrypt_with(
        &public,
        &k,
        &wrapped,
        "kz.referral",
        Some("2021.1.1"),
        &format!("uuid:{id}"),
        instance_xml(
            "kz.referral",
            &answers,
            &case_id,
            &uuid::Uuid::new_v4().to_string(),
        )
        .as_bytes(),
        &media,
    );
    cases.push((
        "mismatched instanceID",
        multipart_body(&parts_of(&swapped)),
        400,
    ));

    // A file replaced after signing.
    let signed = odk::encrypt_with(
        &public,
        &k,
        &wrapped,
        "kz.referral",
        Some("2021.1.1"),
        &format!("uuid:{id}"),
        xml.as_bytes(),
        &media,
    );
    let other_media: Vec<(&str, &[u8])> = media
        .iter()
        .map(|(n, _)| (*n, b"another picture".as_slice()))
        .collect();
    let other = odk::encrypt_with(
        &public,
        &k,
        &wrapped,
        "kz.referral",
        Some("2021.1.1"),
        &format!("uuid:{id}"),
        xml.as_bytes(),
        &other_media,
    );
    let mut tampered = signed.clone();
    tampered.files[0].bytes = other.files[0].bytes.clone();
    cases.push((
        "signature mismatch",
        multipart_body(&parts_of(&tampered)),
        400,
    ));

    // The multipart body cut short.
    let whole = multipart_body(&parts_of(&good(&id)));
    cases.push((
        "truncated multipart",
        whole[..whole.len() / 2].to_vec(),
        400,
    ));

    // An answer the form cannot hold (a name where yes/no goes): named by
    // its place, never quoted back.
    let bad_answer = instance_xml("kz.referral", &answers, &case_id, &id).replacen(
        "<child_dob_estimated>true</child_dob_estimated>",
        "<child_dob_estimated>Dana Quoted</child_dob_estimated>",
        1,
    );
    assert!(bad_answer.contains("Dana Quoted"));
    let unreadable = odk::encrypt(
        &public,
        "kz.referral",
        Some("2021.1.1"),
        &format!("uuid:{id}"),
        bad_answer.as_bytes(),
        &media,
    );
    cases.push((
        "unreadable answer",
        multipart_body(&parts_of(&unreadable)),
        400,
    ));

    // A 0-byte part.
    let mut empty = good(&id);
    let i = file_of(&mut empty, "submission.xml.enc");
    empty.files[i].bytes.clear();
    cases.push(("0-byte part", multipart_body(&parts_of(&empty)), 400));

    // No xml_submission_file.
    let no_xml: Vec<Part> = parts_of(&good(&id)).into_iter().skip(1).collect();
    cases.push(("no manifest", multipart_body(&no_xml), 400));

    // A form this server does not have.
    let unknown = good(&id);
    let mut parts = parts_of(&unknown);
    parts[0].1 = unknown
        .manifest
        .replace("version=\"2021.1.1\"", "version=\"1999.1\"")
        .into_bytes();
    cases.push(("unknown version", multipart_body(&parts), 404));

    // Plaintext, not allowed by default.
    cases.push((
        "plaintext",
        multipart_body(&[("xml_submission_file".into(), xml.clone().into_bytes())]),
        400,
    ));

    // Larger than the server takes.
    let big = vec![
        b'x';
        app.settings.max_submission_bytes
            + app.settings.max_attachment_bytes as usize
            + 128 * 1024
    ];
    let mut parts = parts_of(&good(&id));
    parts.push(("huge.jpg.enc".into(), big));
    cases.push(("too large", multipart_body(&parts), 413));

    let kept_parts = || -> i64 {
        use casesync::db::schema::odk_upload_parts;
        use diesel::prelude::*;
        odk_upload_parts::table
            .count()
            .get_result(&mut app.conn())
            .unwrap()
    };
    for (what, body, status) in cases {
        let res = post_body(&app, "/odk/kz/submission", &auth, &body);
        assert_openrosa_error(&res, status);
        // Each refused for its own reason, said in words.
        let why = match what {
            "wrong key" => "does not open with this programme's key",
            "MGF1-SHA-1 wrap" => "MGF1-SHA-1",
            "files out of manifest order" => "encrypted in another order",
            "bad padding" => "properly padded",
            "mismatched instanceID" => "instanceID is not the one in the manifest",
            "signature mismatch" => "do not match the submission's signature",
            "truncated multipart" => "cut short",
            "0-byte part" => "is empty (0 bytes)",
            "no manifest" => "no xml_submission_file",
            "unknown version" => "update the blank forms",
            "plaintext" => "only encrypted submissions",
            "unreadable answer" => "child_dob_estimated: the answer is neither true nor false",
            _ => "",
        };
        assert!(res.text.contains(why), "{what}: {}", res.text);
        assert!(!res.text.contains("Dana"), "{what}: {}", res.text);
        assert_eq!(app.stored_submissions(), before, "{what} stored something");
        assert_eq!(kept_parts(), 0, "{what} kept a part");
    }
    let res = get(
        &app,
        &format!("/api/v1/cases/{case_id}"),
        Some(&format!("Bearer {session}")),
    );
    assert_eq!(res.status, 404, "no case was opened");
}

#[test]
fn plaintext_is_taken_only_where_the_setting_allows_it() {
    let app = TestApp::spawn_with(|s| s.odk_allow_plaintext = true);
    let admin = app.admin_token();
    let (_, session, device) = worker(&app, &admin, "aigerim");
    let case_id = uuid::Uuid::new_v4().to_string();
    let answers = referral(&case_id).data();
    let id = uuid::Uuid::new_v4().to_string();
    let xml = instance_xml("kz.referral", &answers, &case_id, &id);
    let mut parts: Vec<Part> = vec![("xml_submission_file".into(), xml.into_bytes())];
    parts.extend(media_of(&answers));
    // From loopback, as the tests are.
    let res = post(&app, &basic("aigerim", &device), &parts);
    assert_eq!(res.status, 201, "{}", res.text);
    app.case(&session, &case_id);
    use casesync::db::schema::submissions;
    use diesel::prelude::*;
    let raw: String = submissions::table
        .find(&id)
        .select(submissions::raw_jwe)
        .first(&mut app.conn())
        .unwrap();
    assert_eq!(raw.split('.').count(), 5, "kept encrypted, as a JWE");
}

#[test]
fn a_split_upload_waits_for_its_last_file_then_is_stored_whole() {
    use casesync::db::schema::{odk_upload_parts, submissions};
    use diesel::prelude::*;
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (_, session, device) = worker(&app, &admin, "aigerim");
    let (_, _, bolat_device) = worker(&app, &admin, "bolat");
    let auth = basic("aigerim", &device);
    let case_id = uuid::Uuid::new_v4().to_string();
    let instance_id = uuid::Uuid::new_v4().to_string();
    let answers = referral(&case_id).data();
    let sent = encrypted(
        &app,
        &session,
        "kz.referral",
        &answers,
        &case_id,
        &instance_id,
    );
    let parts = parts_of(&sent);
    let (manifest, files) = parts.split_first().unwrap();
    let (xml_part, media_parts) = files.split_last().unwrap();
    assert!(!media_parts.is_empty(), "the referral carries a file");
    let kept = || -> i64 {
        odk_upload_parts::table
            .count()
            .get_result(&mut app.conn())
            .unwrap()
    };
    let before = app.stored_submissions();

    // The first request: the manifest and the files, more to come.
    let mut first = vec![manifest.clone()];
    first.extend(media_parts.iter().cloned());
    first.push(("*isIncomplete*".into(), b"yes".to_vec()));
    let res = post(&app, &auth, &first);
    assert_eq!(res.status, 202, "{}", res.text);
    assert!(res.text.contains("<message nature=\"\">"), "{}", res.text);
    assert_eq!(app.stored_submissions(), before, "nothing stored yet");
    assert_eq!(kept(), 1 + media_parts.len() as i64);

    // Someone else's phone may not finish it.
    let res = post(
        &app,
        &basic("bolat", &bolat_device),
        &[manifest.clone(), xml_part.clone()],
    );
    assert_openrosa_error(&res, 409);

    // The last request: the same manifest and the form.
    let res = post(&app, &auth, &[manifest.clone(), xml_part.clone()]);
    assert_eq!(res.status, 201, "{}", res.text);
    assert_eq!(app.stored_submissions(), before + 1);
    assert_eq!(kept(), 0, "the parts are dropped once stored");
    let status: String = submissions::table
        .find(&instance_id)
        .select(submissions::status)
        .first(&mut app.conn())
        .unwrap();
    assert_eq!(status, "complete");
    app.case(&session, &case_id);
    let name = declarations(&answers)[0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let file = app.get(
        &format!("/api/v1/submissions/{instance_id}/attachments/{name}"),
        &session,
    );
    assert_eq!(file.bytes, attachment_content(&name));

    // A split upload whose parts do not check out is refused whole, and
    // its parts are dropped: nothing half-stored.
    let other_case = uuid::Uuid::new_v4().to_string();
    let other_id = uuid::Uuid::new_v4().to_string();
    let answers = referral(&other_case).data();
    let mut sent = encrypted(
        &app,
        &session,
        "kz.referral",
        &answers,
        &other_case,
        &other_id,
    );
    let last = sent.files.len() - 1;
    *sent.files[last].bytes.last_mut().unwrap() ^= 0x20;
    let parts = parts_of(&sent);
    let (manifest, files) = parts.split_first().unwrap();
    let (xml_part, media_parts) = files.split_last().unwrap();
    let mut first = vec![manifest.clone()];
    first.extend(media_parts.iter().cloned());
    first.push(("*isIncomplete*".into(), b"yes".to_vec()));
    assert_eq!(post(&app, &auth, &first).status, 202);
    let res = post(&app, &auth, &[manifest.clone(), xml_part.clone()]);
    assert_openrosa_error(&res, 400);
    assert_eq!(kept(), 0);
    assert_eq!(app.stored_submissions(), before + 1);
}

/// `casesync collect odk-push` (the benchmark's OpenRosa mode) sends copies
/// as Collect does, and each is stored.
#[test]
fn the_collector_pushes_copies_as_odk_collect_does() {
    use common::bin::BIN;
    let app = TestApp::spawn();
    let admin = app.admin_token();
    worker(&app, &admin, "aigerim");
    let work = tempfile::tempdir().unwrap();
    let phone = work.path().join("phone");
    let mut answers = fixture("kz.referral");
    // Signed on paper: odk-push sends no files.
    answers["signoff"]["referrer_signature"]
        .as_object_mut()
        .unwrap()
        .remove("signature");
    let answers_file = work.path().join("referral.json");
    std::fs::write(&answers_file, answers.to_string()).unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(BIN)
            .arg("collect")
            .arg("--dir")
            .arg(&phone)
            .args(args)
            .env("CASESYNC_COLLECT_PASSWORD", common::USER_PASSWORD)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "collect {args:?}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    run(&["login", "--server", &app.url(""), "--username", "aigerim"]);
    let before = app.stored_submissions();
    let out = run(&[
        "odk-push",
        "kz.referral",
        answers_file.to_str().unwrap(),
        "--count",
        "3",
        "--concurrency",
        "2",
    ]);
    assert!(out.contains("OpenRosa: 3 stored, 0 refused"), "{out}");
    assert_eq!(app.stored_submissions(), before + 3);
}

/// A 10 MB photo (the most an attachment may be) too big to go with the
/// rest: Collect sends it alone with `*isIncomplete*`, then the form and the
/// other files. Stored whole, the photo byte for byte.
#[test]
fn a_ten_megabyte_photo_split_over_two_posts_is_stored_intact() {
    use casesync::db::schema::odk_upload_parts;
    use diesel::prelude::*;
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (_, session, device) = worker(&app, &admin, "aigerim");
    let auth = basic("aigerim", &device);
    let case_id = uuid::Uuid::new_v4().to_string();
    let opening = encrypted(
        &app,
        &session,
        "kz.referral",
        &referral(&case_id).data(),
        &case_id,
        &uuid::Uuid::new_v4().to_string(),
    );
    assert_eq!(post(&app, &auth, &parts_of(&opening)).status, 201);

    let answers = fixture("kz.age_assessment");
    let instance_id = uuid::Uuid::new_v4().to_string();
    let photo_name = "vaccination-card.jpg";
    let photo: Vec<u8> = (0..app.settings.max_attachment_bytes as usize)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    assert_eq!(photo.len(), 10_000_000);
    let mut media = media_of(&answers);
    let at = media.iter().position(|(n, _)| n == photo_name).unwrap();
    media[at].1 = photo.clone();
    let xml = instance_xml("kz.age_assessment", &answers, &case_id, &instance_id);
    let sent = odk::encrypt(
        &kz_key(&app, &session),
        "kz.age_assessment",
        Some("2021.1.1"),
        &format!("uuid:{instance_id}"),
        xml.as_bytes(),
        &media
            .iter()
            .map(|(n, b)| (n.as_str(), b.as_slice()))
            .collect::<Vec<_>>(),
    );
    let parts = parts_of(&sent);
    let manifest = parts[0].clone();
    let (big, rest): (Vec<Part>, Vec<Part>) = parts[1..]
        .iter()
        .cloned()
        .partition(|(n, _)| n == &format!("{photo_name}.enc"));
    assert_eq!(big.len(), 1);
    let before = app.stored_submissions();

    let mut first = vec![manifest.clone()];
    first.extend(big);
    first.push(("*isIncomplete*".into(), b"yes".to_vec()));
    let res = post(&app, &auth, &first);
    assert_eq!(res.status, 202, "{}", res.text);
    assert_eq!(app.stored_submissions(), before, "nothing stored yet");
    let kept: i64 = odk_upload_parts::table
        .count()
        .get_result(&mut app.conn())
        .unwrap();
    assert_eq!(kept, 2, "the manifest and the photo wait");

    let mut last = vec![manifest];
    last.extend(rest);
    let res = post(&app, &auth, &last);
    assert_eq!(res.status, 201, "{}", res.text);
    assert_eq!(app.stored_submissions(), before + 1);
    let kept: i64 = odk_upload_parts::table
        .count()
        .get_result(&mut app.conn())
        .unwrap();
    assert_eq!(kept, 0, "nothing left waiting");
    let file = app.get(
        &format!("/api/v1/submissions/{instance_id}/attachments/{photo_name}"),
        &session,
    );
    assert_eq!(file.status, 200, "{}", file.text);
    assert!(file.bytes == photo, "the photo arrived changed");
    for (name, bytes) in media.iter().filter(|(n, _)| n != photo_name) {
        let file = app.get(
            &format!("/api/v1/submissions/{instance_id}/attachments/{name}"),
            &session,
        );
        assert_eq!(&file.bytes, bytes, "{name}");
    }
}

/// The parts of split uploads whose last request never came are deleted
/// after `odk_split_upload_days` (children's data is not kept for ever);
/// an upload still receiving parts keeps all of them; the audit log holds
/// the counts, not whose.
#[test]
fn split_uploads_never_finished_are_pruned_after_the_settings_days() {
    use casesync::db::schema::{audit_log, odk_upload_parts};
    use diesel::prelude::*;
    let app = TestApp::spawn_with(|s| s.odk_split_upload_days = 3);
    let admin = app.admin_token();
    let (worker_id, _, device) = worker(&app, &admin, "aigerim");
    let now = chrono::Utc::now().naive_utc();
    let days = |d: i64| now - chrono::Duration::days(d);
    let rows = [
        ("uuid:abandoned", "xml_submission_file", days(4)),
        ("uuid:abandoned", "photo.jpg.enc", days(4)),
        ("uuid:abandoned", "signature.png.enc", days(5)),
        ("uuid:going-on", "xml_submission_file", days(4)),
        (
            "uuid:going-on",
            "photo.jpg.enc",
            now - chrono::Duration::hours(1),
        ),
        ("uuid:fresh", "xml_submission_file", now),
    ];
    for (instance_id, name, at) in rows {
        diesel::insert_into(odk_upload_parts::table)
            .values((
                odk_upload_parts::instance_id.eq(instance_id),
                odk_upload_parts::name.eq(name),
                odk_upload_parts::submitted_by.eq(&worker_id),
                odk_upload_parts::content.eq("AAAAAAAAAAAAAAAAAAAAAA=="),
                odk_upload_parts::received_at.eq(at),
            ))
            .execute(&mut app.conn())
            .unwrap();
    }
    // The server's first OpenRosa upload prunes (then at most hourly);
    // this one is refused for its own reason.
    let res = post(&app, &basic("aigerim", &device), &[]);
    assert_openrosa_error(&res, 400);
    let mut left: Vec<(String, String)> = odk_upload_parts::table
        .select((odk_upload_parts::instance_id, odk_upload_parts::name))
        .load(&mut app.conn())
        .unwrap();
    left.sort();
    assert_eq!(
        left,
        [
            ("uuid:fresh".to_string(), "xml_submission_file".to_string()),
            ("uuid:going-on".to_string(), "photo.jpg.enc".to_string()),
            (
                "uuid:going-on".to_string(),
                "xml_submission_file".to_string()
            ),
        ]
    );
    let audited: Vec<(Option<String>, Option<String>, Option<String>)> = audit_log::table
        .filter(audit_log::action.eq("odk_upload_parts_pruned"))
        .select((audit_log::detail, audit_log::object_id, audit_log::actor_id))
        .load(&mut app.conn())
        .unwrap();
    assert_eq!(
        audited,
        [(
            Some("3 parts of 1 split uploads unfinished for 3 days deleted".to_string()),
            None,
            None
        )]
    );
}

/// Answers the form version refuses, in a form Collect decrypted fine:
/// the phone cannot change a sent form, so it is stored (encrypted at
/// rest), not processed, and held for a coordinator: 202 with what to do,
/// the places and never a value. A resend is 202 and stores nothing more;
/// the coordinator sees it on the held list and dismisses it with a
/// reason (audited). The same answers as a JWE are 422: that client can
/// fix them.
#[test]
fn answers_the_form_refuses_are_held_for_a_coordinator_with_202() {
    use casesync::db::schema::{audit_log, submission_cells, submissions};
    use diesel::prelude::*;
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (_, session, device) = worker(&app, &admin, "aigerim");
    let (_, coordinator) = app.user(&admin, "saule", "coordinator", &["KZ-CAM-ALA"]);
    let (_, elsewhere) = app.user(&admin, "marat", "coordinator", &["KZ-CAM-SHY"]);
    let auth = basic("aigerim", &device);
    let case_id = uuid::Uuid::new_v4().to_string();
    let instance_id = uuid::Uuid::new_v4().to_string();
    let mut answers = referral(&case_id).child("Dana Quarantine").data();
    answers["migration"]
        .as_object_mut()
        .unwrap()
        .remove("migration_status_description");

    // As a JWE: 422, nothing stored.
    let before = app.stored_submissions();
    let mut envelope = form_envelope("kz.referral", &case_id, answers.clone());
    envelope["instance_id"] = json!(uuid::Uuid::new_v4().to_string());
    let res = phone(&app, &session).send(&envelope);
    assert_eq!(res.status, 422, "{}", res.text);
    assert_eq!(app.stored_submissions(), before);

    // From Collect: 202, held.
    let sent = encrypted(
        &app,
        &session,
        "kz.referral",
        &answers,
        &case_id,
        &instance_id,
    );
    let res = post(&app, &auth, &parts_of(&sent));
    assert_eq!(res.status, 202, "{}", res.text);
    assert_eq!(res.header("x-openrosa-version"), Some("1.0"));
    assert!(
        res.text.contains(
            "<message nature=\"\">Received, held for your coordinator: some answers do not fit the form"
        ),
        "{}",
        res.text
    );
    assert!(
        res.text
            .contains("/data/migration/migration_status_description"),
        "{}",
        res.text
    );
    assert!(!res.text.contains("Dana"), "{}", res.text);
    assert_eq!(app.stored_submissions(), before + 1);
    let (status, raw, problems, case): (String, String, Option<String>, Option<String>) =
        submissions::table
            .find(&instance_id)
            .select((
                submissions::status,
                submissions::raw_jwe,
                submissions::problems,
                submissions::case_id,
            ))
            .first(&mut app.conn())
            .unwrap();
    assert_eq!(status, "quarantined");
    assert_eq!(raw.split('.').count(), 5, "kept encrypted, as a JWE");
    assert!(!raw.contains("Dana"));
    let problems: Value = serde_json::from_str(&problems.unwrap()).unwrap();
    assert_eq!(
        problems[0]["pointer"],
        "/data/migration/migration_status_description"
    );
    assert!(!problems.to_string().contains("Dana"));
    assert_eq!(case, None, "joined no case");
    let cells: i64 = submission_cells::table
        .filter(submission_cells::instance_id.eq(&instance_id))
        .count()
        .get_result(&mut app.conn())
        .unwrap();
    assert_eq!(cells, 0, "in no export");
    let res = get(
        &app,
        &format!("/api/v1/cases/{case_id}"),
        Some(&format!("Bearer {session}")),
    );
    assert_eq!(res.status, 404, "no case was opened");
    // Its file was kept with it.
    let name = declarations(&answers)[0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let files: i64 = casesync::db::schema::attachments::table
        .filter(casesync::db::schema::attachments::instance_id.eq(&instance_id))
        .filter(casesync::db::schema::attachments::received_at.is_not_null())
        .count()
        .get_result(&mut app.conn())
        .unwrap();
    assert_eq!(files, 1, "{name} kept");

    // The resend: 202 again, nothing more.
    let again = post(&app, &auth, &parts_of(&sent));
    assert_eq!(again.status, 202, "{}", again.text);
    assert_eq!(app.stored_submissions(), before + 1);
    let audited = |action: &str| -> Vec<(Option<String>, Option<String>)> {
        audit_log::table
            .filter(audit_log::action.eq(action))
            .select((audit_log::detail, audit_log::purpose))
            .load(&mut app.conn())
            .unwrap()
    };
    let quarantined = audited("submission_quarantined");
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    assert!(!format!("{quarantined:?}").contains("Dana"));

    // The site's coordinator sees it at once, with the problems.
    let held = app.get("/api/v1/submissions/held", &coordinator);
    assert_eq!(held.status, 200, "{}", held.text);
    let listed: Vec<&Value> = held.body["held"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["instance_id"] == instance_id.as_str())
        .collect();
    assert_eq!(listed.len(), 1, "{}", held.text);
    assert_eq!(listed[0]["status"], "quarantined");
    assert_eq!(listed[0]["case_id"], case_id.as_str());
    assert_eq!(listed[0]["username"], "aigerim");
    assert_eq!(
        listed[0]["problems"][0]["pointer"],
        "/data/migration/migration_status_description"
    );
    assert!(!held.text.contains("Dana"), "{}", held.text);
    // Another site's coordinator does not, and may not dismiss it.
    let other = app.get("/api/v1/submissions/held", &elsewhere);
    assert!(!other.text.contains(&instance_id), "{}", other.text);
    let dismissal = format!("/api/v1/submissions/held/{instance_id}/dismissal");
    let res = app.post(&dismissal, &elsewhere, json!({ "reason": "not ours" }));
    assert_eq!(res.status, 404, "{}", res.text);
    // A field worker may not.
    let res = app.post(&dismissal, &session, json!({ "reason": "mine" }));
    assert_eq!(res.status, 403, "{}", res.text);

    // Dismissed with a reason, which the audit log keeps.
    let res = app.post(&dismissal, &coordinator, json!({ "reason": "  " }));
    assert_eq!(res.status, 422, "{}", res.text);
    let reason = "the worker filled the referral again on paper";
    let res = app.post(&dismissal, &coordinator, json!({ "reason": reason }));
    assert_eq!(res.status, 204, "{}", res.text);
    assert_eq!(
        audited("quarantined_form_dismissed")
            .into_iter()
            .map(|(_, purpose)| purpose)
            .collect::<Vec<_>>(),
        [Some(reason.to_string())]
    );
    let held = app.get("/api/v1/submissions/held", &coordinator);
    assert!(!held.text.contains(&instance_id), "{}", held.text);
    let res = app.post(&dismissal, &coordinator, json!({ "reason": reason }));
    assert_eq!(res.status, 409, "{}", res.text);
    // A resend after that is still a retry.
    let again = post(&app, &auth, &parts_of(&sent));
    assert_eq!(again.status, 202, "{}", again.text);
    assert_eq!(app.stored_submissions(), before + 1);
}

/// Plaintext needs TLS. With `trusted_proxies` set, only those addresses'
/// `X-Forwarded-Proto: https` says so, and a loopback peer without it is
/// plain HTTP (a proxy on the same host forwards plain requests too).
#[test]
fn plaintext_trusts_the_forwarded_proto_only_from_a_configured_proxy() {
    let send = |app: &TestApp, auth: &str, forwarded: Option<&str>| -> Response {
        let case_id = uuid::Uuid::new_v4().to_string();
        let answers = referral(&case_id).data();
        let xml = instance_xml(
            "kz.referral",
            &answers,
            &case_id,
            &uuid::Uuid::new_v4().to_string(),
        );
        let mut parts: Vec<Part> = vec![("xml_submission_file".into(), xml.into_bytes())];
        parts.extend(media_of(&answers));
        let mut req = agent()
            .post(app.url("/odk/kz/submission"))
            .header("Authorization", auth)
            .content_type(format!("multipart/form-data; boundary={BOUNDARY}"));
        if let Some(proto) = forwarded {
            req = req.header("X-Forwarded-Proto", proto);
        }
        Response::from(req.send(&multipart_body(&parts)[..]).unwrap())
    };
    // This test's requests come from loopback, the proxy's address.
    let app = TestApp::spawn_with(|s| {
        s.odk_allow_plaintext = true;
        s.trusted_proxies = vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
    });
    let admin = app.admin_token();
    let (_, _, device) = worker(&app, &admin, "aigerim");
    let auth = basic("aigerim", &device);
    let before = app.stored_submissions();
    let res = send(&app, &auth, None);
    assert_openrosa_error(&res, 400);
    assert!(
        res.text.contains("only encrypted submissions"),
        "{}",
        res.text
    );
    assert_openrosa_error(&send(&app, &auth, Some("http")), 400);
    assert_eq!(app.stored_submissions(), before);
    let res = send(&app, &auth, Some("https"));
    assert_eq!(res.status, 201, "{}", res.text);
    assert_eq!(app.stored_submissions(), before + 1);

    // A proxy elsewhere: loopback's header is anyone's, not TLS.
    let app = TestApp::spawn_with(|s| {
        s.odk_allow_plaintext = true;
        s.trusted_proxies = vec!["10.1.2.3".parse().unwrap()];
    });
    let admin = app.admin_token();
    let (_, _, device) = worker(&app, &admin, "aigerim");
    let auth = basic("aigerim", &device);
    let before = app.stored_submissions();
    assert_openrosa_error(&send(&app, &auth, Some("https")), 400);
    assert_openrosa_error(&send(&app, &auth, None), 400);
    assert_eq!(app.stored_submissions(), before);
}

/// A KZ referral's answers without `migration_status_description`, which
/// the form version requires: what a coordinator finds held.
fn unfit(answers: &Value) -> Value {
    let mut unfit = answers.clone();
    unfit["migration"]
        .as_object_mut()
        .unwrap()
        .remove("migration_status_description");
    unfit
}

const MISSING: &str = "/data/migration/migration_status_description";

/// A KZ referral of `answers` less a required answer (`unfit`), sent
/// from Collect by `auth` (whose web session is `session`) about
/// `case_id` and held for a coordinator (202): its instance id and what
/// was sent (to send again).
fn held_from_collect(
    app: &TestApp,
    session: &str,
    auth: &str,
    answers: &Value,
    case_id: &str,
) -> (String, odk::Encrypted) {
    let instance_id = uuid::Uuid::new_v4().to_string();
    let sent = encrypted(
        app,
        session,
        "kz.referral",
        &unfit(answers),
        case_id,
        &instance_id,
    );
    let res = post(app, auth, &parts_of(&sent));
    assert_eq!(res.status, 202, "{}", res.text);
    (instance_id, sent)
}

/// Issue #17, the quarantine's open gaps: a coordinator of the sender's
/// sites reads a held form's answers, each beside what its form version
/// says of it (audited as `quarantined_form_read`); everyone else gets
/// 404, audited as a refusal. The console's held list links the page.
#[test]
fn a_coordinator_reads_a_held_forms_answers_with_its_problems_beside_them() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (_, session, device) = worker(&app, &admin, "aigerim");
    let (_, coordinator) = app.user(&admin, "saule", "coordinator", &["KZ-CAM-ALA"]);
    let (_, elsewhere) = app.user(&admin, "marat", "coordinator", &["KZ-CAM-SHY"]);
    let case_id = uuid::Uuid::new_v4().to_string();
    let answers = referral(&case_id).child("Dana Held").data();
    let (instance_id, _) = held_from_collect(
        &app,
        &session,
        &basic("aigerim", &device),
        &answers,
        &case_id,
    );
    let answers = unfit(&answers);

    let path = format!("/api/v1/submissions/held/{instance_id}");
    let read_before = app.audit_count("quarantined_form_read");
    let refused_before = app.audit_count("access_refused");
    let res = app.get(&path, &coordinator);
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.header("cache-control"), Some("no-store"));
    let body = &res.body;
    assert_eq!(body["status"], "quarantined");
    assert_eq!(body["username"], "aigerim");
    assert_eq!(body["case_id"], case_id.as_str());
    // The answers as the phone sent them.
    assert_eq!(body["data"], answers);
    assert_eq!(body["problems"][0]["pointer"], MISSING);
    // The missing answer has its line, in its section, with its problem.
    let lines = body["answers"].as_array().unwrap();
    let at = lines
        .iter()
        .position(|l| l["pointer"] == "/migration/migration_status_description")
        .unwrap_or_else(|| panic!("no line for the missing answer: {}", res.text));
    assert_eq!(lines[at]["unanswered"], true);
    assert!(
        !lines[at]["problems"].as_array().unwrap().is_empty(),
        "{}",
        res.text
    );
    let section = lines[..at]
        .iter()
        .rposition(|l| l["pointer"] == "/migration")
        .expect("the line sits in its section");
    assert_eq!(lines[section]["heading"], true);
    assert!(
        lines.iter().any(|l| l["pointer"] == "/child/child_name"
            && l["value"] == "Dana Held"
            && l["problems"] == json!([])),
        "the child's answers are there: {}",
        res.text
    );
    assert_eq!(body["general_problems"], json!([]));
    assert_eq!(app.audit_count("quarantined_form_read"), read_before + 1);

    // Another site's coordinator, and the worker who sent it: 404, each
    // refusal audited; nothing read.
    for token in [&elsewhere, &session] {
        let res = app.get(&path, token);
        assert_eq!(res.status, 404, "{}", res.text);
        assert!(!res.text.contains("Dana"), "{}", res.text);
    }
    assert_eq!(app.audit_count("access_refused"), refused_before + 2);
    assert_eq!(app.audit_count("quarantined_form_read"), read_before + 1);
    // A submission that was never held is not one.
    let res = app.get(
        &format!("/api/v1/submissions/held/{}", uuid::Uuid::new_v4()),
        &coordinator,
    );
    assert_eq!(res.status, 404, "{}", res.text);

    // The console: Today's held forms link the page, which shows the
    // problem beside the unanswered question.
    let mut browser = crate::console::Browser::with_session(&app, &coordinator);
    let today = browser.get("/today");
    assert!(
        today
            .text
            .contains(&format!("href=\"/held/{instance_id}\"")),
        "{}",
        today.text
    );
    let page = browser.get(&format!("/held/{instance_id}"));
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page.text.contains("not answered"), "{}", page.text);
    assert!(page.text.contains(MISSING), "{}", page.text);
    assert!(page.text.contains("Dana Held"), "{}", page.text);
    assert_eq!(app.audit_count("quarantined_form_read"), read_before + 2);
    let other = crate::console::Browser::with_session(&app, &elsewhere)
        .get(&format!("/held/{instance_id}"));
    assert_eq!(other.status, 404);
    assert!(!other.text.contains("Dana"));
}

/// A KZ referral sent clean as a JWE on its own server: the twin a
/// corrected held form is compared with (case and timeline).
fn clean_twin(answers: &Value, case_id: &str, edit: Option<&Value>) -> (Value, Value) {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (_, session, _) = worker(&app, &admin, "aigerim");
    let p = phone(&app, &session);
    let mut sent = vec![(answers.clone(), None)];
    let first = uuid::Uuid::new_v4().to_string();
    if let Some(edited) = edit {
        sent.push((edited.clone(), Some(first.clone())));
    }
    for (i, (data, supersedes)) in sent.into_iter().enumerate() {
        let instance_id = if i == 0 {
            first.clone()
        } else {
            uuid::Uuid::new_v4().to_string()
        };
        let mut envelope = form_envelope("kz.referral", case_id, data.clone());
        envelope["instance_id"] = json!(instance_id);
        envelope["started_at"] = json!(STARTED);
        envelope["completed_at"] = json!(COMPLETED);
        if let Some(earlier) = supersedes {
            envelope["supersedes"] = json!(earlier);
        }
        let res = p.send(&envelope);
        assert_eq!(res.status, 201, "{}", res.text);
        for d in declarations(&data) {
            let name = d["name"].as_str().unwrap();
            let res = p.attach(&instance_id, name, &attachment_content(name));
            assert_eq!(res.status, 201, "{}", res.text);
        }
    }
    (
        app.case(&session, case_id),
        app.get(&format!("/api/v1/cases/{case_id}/timeline"), &session)
            .body,
    )
}

/// Issue #17: a held form whose version an admin retired after it was
/// held cannot be corrected (no form of a retired version is accepted);
/// the coordinator is told why and what to do, not the phone's "sync to
/// get the current version", and nothing changes.
#[test]
fn a_held_form_of_a_version_retired_since_is_not_corrected_and_the_coordinator_is_told_why() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (_, session, device) = worker(&app, &admin, "aigerim");
    let (_, coordinator) = app.user(&admin, "saule", "coordinator", &["KZ-CAM-ALA"]);
    let case_id = uuid::Uuid::new_v4().to_string();
    let answers = referral(&case_id).child("Dana Retired").data();
    let (instance_id, _) = held_from_collect(
        &app,
        &session,
        &basic("aigerim", &device),
        &answers,
        &case_id,
    );
    let held = app.get(
        &format!("/api/v1/submissions/held/{instance_id}"),
        &coordinator,
    );
    assert_eq!(held.status, 200, "{}", held.text);
    let version = held.body["form_version"].as_str().unwrap().to_string();
    let retired = app.post(
        &format!("/api/v1/forms/kz.referral/versions/{version}/retire"),
        &admin,
        json!({}),
    );
    assert!(retired.status < 300, "{}", retired.text);
    let stored = app.stored_submissions();

    let res = app.post(
        &format!("/api/v1/submissions/held/{instance_id}/correction"),
        &coordinator,
        json!({ "data": answers }),
    );
    assert_eq!(res.status, 409, "{}", res.text);
    assert!(
        res.text.contains("was retired after the form was held"),
        "{}",
        res.text
    );
    assert!(res.text.contains("dismiss it"), "{}", res.text);
    assert!(!res.text.contains("sync to get"), "{}", res.text);
    assert_eq!(app.stored_submissions(), stored);
    let again = app.get(
        &format!("/api/v1/submissions/held/{instance_id}"),
        &coordinator,
    );
    assert_eq!(again.body["status"], "quarantined", "{}", again.text);
}

/// Issue #17: a coordinator corrects a held form. Answers that still do
/// not fit are 422 with the usual problems, and nothing changes; answers
/// that fit are stored by the usual path as the form's accepted version,
/// and the case folds exactly as if they had arrived clean (compared with
/// the same answers sent as a JWE). The held form is kept as the phone
/// sent it, off the held list; the correction is audited with the
/// coordinator as actor; the same correction again changes nothing.
#[test]
fn a_corrected_held_form_folds_into_its_case_as_the_same_answers_sent_clean() {
    use casesync::db::schema::{audit_log, submissions};
    use diesel::prelude::*;
    let case_id = uuid::Uuid::new_v4().to_string();
    let answers = referral(&case_id).child("Dana Corrected").data();
    let (twin_case, twin_timeline) = clean_twin(&answers, &case_id, None);

    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (_, session, device) = worker(&app, &admin, "aigerim");
    let (saule, coordinator) = app.user(&admin, "saule", "coordinator", &["KZ-CAM-ALA"]);
    let (_, elsewhere) = app.user(&admin, "marat", "coordinator", &["KZ-CAM-SHY"]);
    let auth = basic("aigerim", &device);
    let (instance_id, sent) = held_from_collect(&app, &session, &auth, &answers, &case_id);
    let correction = format!("/api/v1/submissions/held/{instance_id}/correction");
    let stored = app.stored_submissions();

    // Still wrong: 422 with the problem where it is; nothing changes.
    let still = unfit(&answers);
    let res = app.post(&correction, &coordinator, json!({ "data": still }));
    assert_eq!(res.status, 422, "{}", res.text);
    assert!(res.text.contains(MISSING), "{}", res.text);
    assert_eq!(app.stored_submissions(), stored);
    let held = app.get("/api/v1/submissions/held", &coordinator);
    assert!(held.text.contains(&instance_id), "{}", held.text);
    assert_eq!(
        get(
            &app,
            &format!("/api/v1/cases/{case_id}"),
            Some(&format!("Bearer {session}"))
        )
        .status,
        404
    );
    // Not the caller's to correct: 404 (another site), as for reading.
    let res = app.post(&correction, &elsewhere, json!({ "data": answers }));
    assert_eq!(res.status, 404, "{}", res.text);
    let res = app.post(&correction, &session, json!({ "data": answers }));
    assert_eq!(res.status, 404, "{}", res.text);
    assert_eq!(app.stored_submissions(), stored);

    // Corrected: stored as the accepted version, the case opened.
    let res = app.post(&correction, &coordinator, json!({ "data": answers }));
    assert_eq!(res.status, 201, "{}", res.text);
    let accepted = res.body["instance_id"].as_str().unwrap().to_string();
    assert_ne!(accepted, instance_id);
    assert_eq!(res.body["case_id"], case_id.as_str());
    assert_eq!(res.body["status"], "complete");
    assert_eq!(app.stored_submissions(), stored + 1);
    assert_eq!(
        comparable(app.case(&session, &case_id)),
        comparable(twin_case)
    );
    let timeline = app.get(&format!("/api/v1/cases/{case_id}/timeline"), &session);
    assert_eq!(comparable(timeline.body.clone()), comparable(twin_timeline));
    // Its file came with it, and opens as any attachment does.
    let name = declarations(&answers)[0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let file = app.get(
        &format!("/api/v1/submissions/{accepted}/attachments/{name}"),
        &session,
    );
    assert_eq!(file.status, 200, "{}", file.text);
    assert_eq!(file.bytes, attachment_content(&name));

    // The held form: kept as the phone sent it, corrected, off the list.
    let (status, by): (String, Option<String>) = submissions::table
        .find(&instance_id)
        .select((submissions::status, submissions::superseded_by))
        .first(&mut app.conn())
        .unwrap();
    assert_eq!(
        (status.as_str(), by.as_deref()),
        ("corrected", Some(accepted.as_str()))
    );
    let held = app.get("/api/v1/submissions/held", &coordinator);
    assert!(!held.text.contains(&instance_id), "{}", held.text);
    let original = app.get(
        &format!("/api/v1/submissions/held/{instance_id}"),
        &coordinator,
    );
    assert_eq!(original.status, 200, "{}", original.text);
    assert_eq!(
        original.body["data"],
        unfit(&answers),
        "what the phone sent"
    );
    assert_eq!(original.body["corrected_as"], accepted.as_str());
    // Audited once, naming the coordinator.
    let corrected: Vec<(Option<String>, Option<String>, Option<String>)> = audit_log::table
        .filter(audit_log::action.eq("quarantined_form_corrected"))
        .select((audit_log::actor_id, audit_log::object_id, audit_log::detail))
        .load(&mut app.conn())
        .unwrap();
    assert_eq!(corrected.len(), 1, "{corrected:?}");
    assert_eq!(corrected[0].0.as_deref(), Some(saule.as_str()));
    assert_eq!(corrected[0].1.as_deref(), Some(instance_id.as_str()));
    assert!(corrected[0].2.as_deref().unwrap().contains(&accepted));

    // The same correction again: the same receipt, nothing changes.
    let again = app.post(&correction, &coordinator, json!({ "data": answers }));
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.body["instance_id"], accepted.as_str());
    assert_eq!(app.stored_submissions(), stored + 1);
    assert_eq!(app.audit_count("quarantined_form_corrected"), 1);
    let after = app.get(&format!("/api/v1/cases/{case_id}/timeline"), &session);
    assert_eq!(comparable(after.body), comparable(timeline.body));
    // Other answers now: 409; a dismissal: 409. Nothing changes.
    let mut other = answers.clone();
    other["child"]["child_name"] = json!("Dana Other");
    let res = app.post(&correction, &coordinator, json!({ "data": other }));
    assert_eq!(res.status, 409, "{}", res.text);
    let res = app.post(
        &format!("/api/v1/submissions/held/{instance_id}/dismissal"),
        &coordinator,
        json!({ "reason": "late" }),
    );
    assert_eq!(res.status, 409, "{}", res.text);
    // The phone sending the same form again: a retry, now in its case.
    let res = post(&app, &auth, &parts_of(&sent));
    assert_eq!(res.status, 201, "{}", res.text);
    assert_eq!(app.stored_submissions(), stored + 1);
}

/// Issue #17: a held form that was an edit on the phone (Collect's
/// `deprecatedID`, our `supersedes`), once corrected, supersedes the form
/// it edits exactly as a clean edit would: the case shows the edited
/// answers, the original is superseded (compared with the same two forms
/// sent clean as JWEs).
#[test]
fn a_corrected_held_edit_supersedes_the_form_it_edits() {
    use casesync::db::schema::submissions;
    use diesel::prelude::*;
    let case_id = uuid::Uuid::new_v4().to_string();
    let first = referral(&case_id).child("Dana First").data();
    let edited = referral(&case_id).child("Dana Edited").data();
    let (twin_case, twin_timeline) = clean_twin(&first, &case_id, Some(&edited));

    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (_, session, device) = worker(&app, &admin, "aigerim");
    let (_, coordinator) = app.user(&admin, "saule", "coordinator", &["KZ-CAM-ALA"]);
    let auth = basic("aigerim", &device);
    let original = uuid::Uuid::new_v4().to_string();
    let sent = encrypted(&app, &session, "kz.referral", &first, &case_id, &original);
    assert_eq!(post(&app, &auth, &parts_of(&sent)).status, 201);
    let before = app.get(&format!("/api/v1/cases/{case_id}/timeline"), &session);
    // The edit, with an answer missing: held.
    let edit = uuid::Uuid::new_v4().to_string();
    let sent = encrypted_edit(
        &app,
        &session,
        "kz.referral",
        &unfit(&edited),
        &case_id,
        &edit,
        &original,
    );
    let res = post(&app, &auth, &parts_of(&sent));
    assert_eq!(res.status, 202, "held: {}", res.text);
    let held = app.get(&format!("/api/v1/submissions/held/{edit}"), &coordinator);
    assert_eq!(held.status, 200, "{}", held.text);
    let unchanged = app.get(&format!("/api/v1/cases/{case_id}/timeline"), &session);
    assert_eq!(comparable(unchanged.body), comparable(before.body.clone()));

    let res = app.post(
        &format!("/api/v1/submissions/held/{edit}/correction"),
        &coordinator,
        json!({ "data": edited }),
    );
    assert_eq!(res.status, 201, "{}", res.text);
    let accepted = res.body["instance_id"].as_str().unwrap().to_string();
    // The original is superseded by the accepted version, as by an edit.
    let superseded_by: Option<String> = submissions::table
        .find(&original)
        .select(submissions::superseded_by)
        .first(&mut app.conn())
        .unwrap();
    assert_eq!(superseded_by.as_deref(), Some(accepted.as_str()));
    let supersedes: Option<String> = submissions::table
        .find(&accepted)
        .select(submissions::supersedes)
        .first(&mut app.conn())
        .unwrap();
    assert_eq!(supersedes.as_deref(), Some(original.as_str()));
    let timeline = app.get(&format!("/api/v1/cases/{case_id}/timeline"), &session);
    let events = timeline.body["events"].as_array().unwrap();
    let superseded = |id: &str| {
        events
            .iter()
            .find(|e| e["id"] == id)
            .unwrap_or_else(|| panic!("no event {id}: {}", timeline.text))["superseded"]
            .clone()
    };
    assert_eq!(superseded(&original), json!(true));
    assert_eq!(superseded(&accepted), json!(false));
    assert_ne!(comparable(timeline.body.clone()), comparable(before.body));
    // The case as the same two forms sent clean make it.
    assert_eq!(
        comparable(app.case(&session, &case_id)),
        comparable(twin_case)
    );
    assert_eq!(comparable(timeline.body), comparable(twin_timeline));
}

/// Issue #17: the console's held form page asks again the questions with
/// a problem. Left blank, the page comes back (422) saying what still
/// does not fit, and nothing changes; answered, the form goes into its
/// case (the API's correction, audited with the coordinator as actor).
#[test]
fn a_coordinator_corrects_a_held_form_on_the_console() {
    use crate::console::Browser;
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (_, session, device) = worker(&app, &admin, "aigerim");
    let (_, coordinator) = app.user(&admin, "saule", "coordinator", &["KZ-CAM-ALA"]);
    let case_id = uuid::Uuid::new_v4().to_string();
    let answers = referral(&case_id).child("Dana Console").data();
    let (instance_id, _) = held_from_collect(
        &app,
        &session,
        &basic("aigerim", &device),
        &answers,
        &case_id,
    );

    let mut browser = Browser::with_session(&app, &coordinator);
    let page = browser.get(&format!("/held/{instance_id}"));
    assert_eq!(page.status, 200, "{}", page.text);
    let field = "answer:/migration/migration_status_description";
    assert!(
        page.text.contains(&format!("name=\"{field}\"")),
        "{}",
        page.text
    );
    let csrf = Browser::hidden(&page, "csrf");
    let path = format!("/held/{instance_id}/correction");
    let stored = app.stored_submissions();

    // Left blank: still wrong, the page says so, nothing changes.
    let res = browser.post(&path, &[("csrf", &csrf), (field, "  ")]);
    assert_eq!(res.status, 422, "{}", res.text);
    assert!(res.text.contains(MISSING), "{}", res.text);
    assert_eq!(app.stored_submissions(), stored);
    // Without the form's CSRF value: refused.
    let value = answers["migration"]["migration_status_description"]
        .as_str()
        .unwrap();
    let res = browser.post(&path, &[("csrf", "forged"), (field, value)]);
    assert_eq!(res.status, 403, "{}", res.text);
    assert_eq!(app.stored_submissions(), stored);

    // Answered: accepted into the case.
    let res = browser.post(&path, &[("csrf", &csrf), (field, value)]);
    assert_eq!(res.status, 303, "{}", res.text);
    assert_eq!(
        res.header("location"),
        Some(format!("/held/{instance_id}?done=corrected").as_str())
    );
    assert_eq!(app.stored_submissions(), stored + 1);
    assert_eq!(app.audit_count("quarantined_form_corrected"), 1);
    let case = app.get(&format!("/api/v1/cases/{case_id}"), &session);
    assert_eq!(case.status, 200, "{}", case.text);
    let page = browser.get(&format!("/held/{instance_id}?done=corrected"));
    assert!(
        page.text.contains("Corrected and accepted"),
        "{}",
        page.text
    );
    assert!(
        !page.text.contains(&format!("name=\"{field}\"")),
        "no correction form once accepted: {}",
        page.text
    );
}

/// Issue #17, in a real browser: a coordinator opens a held form from
/// Today, sees the missing answer with its problem beside it, answers it
/// and accepts the form into its case (screenshots `held-form*`).
#[test]
fn in_a_browser_a_coordinator_opens_a_held_form_from_today_and_corrects_it() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (_, session, device) = worker(&app, &admin, "aigerim");
    app.user(&admin, "saule", "coordinator", &["KZ-CAM-ALA"]);
    let case_id = uuid::Uuid::new_v4().to_string();
    let answers = referral(&case_id).child("Dana Browser").data();
    let (instance_id, _) = held_from_collect(
        &app,
        &session,
        &basic("aigerim", &device),
        &answers,
        &case_id,
    );
    let Some(browser) = crate::browser::Browser::open(&app) else {
        return;
    };
    browser.sign_in("saule", common::USER_PASSWORD);
    assert_eq!(browser.arrives_at("/today"), "/today");
    browser.click(&format!("a[href='/held/{instance_id}']"));
    let page = format!("/held/{instance_id}");
    assert_eq!(browser.arrives_at(&page), page);
    let shown = browser.text("div.answers");
    assert!(shown.contains("not answered"), "{shown}");
    assert!(shown.contains(MISSING), "{shown}");
    browser.screenshots("held-form");
    // The list at the top leads to the answer the problem is about.
    let listed = browser.text("div.problems ul");
    assert!(listed.contains("Please describe the child"), "{listed}");
    let value = answers["migration"]["migration_status_description"]
        .as_str()
        .unwrap();
    browser.fill(
        "input[name='answer:/migration/migration_status_description']",
        value,
    );
    browser.submit("section[aria-labelledby=correct] button[type=submit]");
    assert!(
        browser.text("p.done").contains("Corrected and accepted"),
        "{}",
        browser.source()
    );
    browser.screenshots("held-form-corrected");
    assert_eq!(
        app.get(&format!("/api/v1/cases/{case_id}"), &session)
            .status,
        200
    );
}
