//! A JWE made by an independent implementation (Python jwcrypto) is
//! accepted: our JOSE profile is the standard one, not a private dialect.
//! `.ci/run` installs jwcrypto and sets CASESYNC_TEST_REQUIRE_INTEROP=1, so CI
//! fails without it; elsewhere the test says it was skipped.

use crate::common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::TestApp;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

fn python() -> String {
    std::env::var("CASESYNC_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn jwcrypto_available() -> bool {
    let found = Command::new(python())
        .args(["-c", "import jwcrypto"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found && std::env::var("CASESYNC_TEST_REQUIRE_INTEROP").is_ok_and(|v| v == "1") {
        panic!(
            "jwcrypto is required (CASESYNC_TEST_REQUIRE_INTEROP=1) but {} cannot import it",
            python()
        );
    }
    found
}

fn jwcrypto_encrypt(jwk: &Value, plaintext: &[u8]) -> String {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/interop/jwcrypto_encrypt.py"
    );
    let mut child = Command::new(python())
        .arg(script)
        .arg(jwk.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(plaintext).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "jwcrypto failed");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_jwe_from_jwcrypto_is_accepted_with_its_attachment() {
    if !jwcrypto_available() {
        eprintln!("SKIPPED: python jwcrypto not installed (CI installs it)");
        return;
    }
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (_, worker) = app.user(&admin, "aigerim", "field_worker", &["KZ-CAM-ALA"]);
    let jwk = app.get("/api/v1/programmes/kz/keys/current", &worker).body;
    let data: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/forms/kz.referral/valid.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let signature = b"\x89PNG signature from another implementation".to_vec();
    let instance_id = uuid::Uuid::new_v4().to_string();
    let envelope = json!({
        "instance_id": instance_id,
        "form_id": "kz.referral",
        "form_version": "2021.1.1",
        "case_id": uuid::Uuid::new_v4().to_string(),
        "device_id": "python-phone",
        "completed_at": "2026-03-02T10:40:00+05:00",
        "data": data,
        "attachments": [{
            "name": "referrer-signature.png",
            "media_type": "image/png",
            "size": signature.len(),
            "sha256": hex::encode(Sha256::digest(&signature)),
        }]
    });
    let submission = jwcrypto_encrypt(&jwk, envelope.to_string().as_bytes());
    let res = app.raw(
        "POST",
        "/api/v1/submissions",
        Some(&worker),
        "application/jose",
        submission.as_bytes(),
    );
    assert_eq!(res.status, 201, "{}", res.text);
    assert_eq!(res.body["status"], "awaiting_attachments");

    let attachment = jwcrypto_encrypt(&jwk, &signature);
    let res = app.raw(
        "PUT",
        &format!("/api/v1/submissions/{instance_id}/attachments/referrer-signature.png"),
        Some(&worker),
        "application/jose",
        attachment.as_bytes(),
    );
    assert_eq!(res.status, 201, "{}", res.text);
    assert_eq!(res.body["submission_status"], "complete");
}
