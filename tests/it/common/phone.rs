//! A phone in tests: builds envelopes from the form fixtures, encrypts
//! them for the programme's current key and sends them over HTTP.

use casesync::crypto::{jwe, keys};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{Response, TestApp};

pub fn fixture(id: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/forms")
        .join(id)
        .join("valid.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The referrer's signature the referral fixture names.
pub const SIGNATURE_NAME: &str = "referrer-signature.png";

/// What the phone attaches under `name`.
pub fn attachment_content(name: &str) -> Vec<u8> {
    format!("\u{89}PNG a picture taken on a tablet: {name}").into_bytes()
}

/// Declarations for every file name the fixture's data mentions.
pub fn declarations(data: &Value) -> Vec<Value> {
    fn walk(v: &Value, out: &mut Vec<Value>) {
        match v {
            Value::String(s) if [".png", ".jpg", ".pdf"].iter().any(|ext| s.ends_with(ext)) => {
                let content = attachment_content(s);
                let media_type = match &s[s.len() - 3..] {
                    "png" => "image/png",
                    "jpg" => "image/jpeg",
                    _ => "application/pdf",
                };
                out.push(json!({
                    "name": s,
                    "media_type": media_type,
                    "size": content.len(),
                    "sha256": hex::encode(Sha256::digest(&content)),
                }));
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            Value::Object(map) => map.values().for_each(|i| walk(i, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(data, &mut out);
    out
}

pub fn envelope(case_id: &str, data: Value) -> Value {
    form_envelope("kz.referral", case_id, data)
}

/// The shipped (current) version of `form_id`.
pub fn version_of(form_id: &str) -> &'static str {
    match form_id {
        // "Case no:" given by the server (#20 item 10).
        "bt.registration" => "2021.11.2",
        f if f.starts_with("bt.") => "2021.11.1",
        _ => "2021.1.1",
    }
}

pub fn form_envelope(form_id: &str, case_id: &str, data: Value) -> Value {
    json!({
        "instance_id": uuid::Uuid::new_v4().to_string(),
        "form_id": form_id,
        "form_version": version_of(form_id),
        "case_id": case_id,
        "device_id": "tablet-7",
        "started_at": "2026-03-02T10:00:00+05:00",
        "completed_at": "2026-03-02T10:40:00+05:00",
        "data": data,
        "attachments": declarations(&data),
    })
}

/// `plaintext` encrypted as a phone does (JWE, RSA-OAEP-256 and A256GCM)
/// for the served public key `jwk` of a programme.
pub fn seal(jwk: &Value, plaintext: &[u8]) -> String {
    let public = keys::public_key_from_jwk(jwk).unwrap();
    jwe::encrypt(plaintext, jwk["kid"].as_str().unwrap(), &public)
}

pub struct Phone<'a> {
    pub app: &'a TestApp,
    pub token: String,
    pub jwk: Value,
}

impl Phone<'_> {
    pub fn encrypt(&self, envelope: &Value) -> String {
        seal(&self.jwk, envelope.to_string().as_bytes())
    }

    pub fn send_raw(&self, body: &str) -> Response {
        self.app.raw(
            "POST",
            "/api/v1/submissions",
            Some(&self.token),
            "application/jose",
            body.as_bytes(),
        )
    }

    pub fn send(&self, envelope: &Value) -> Response {
        self.send_raw(&self.encrypt(envelope))
    }

    pub fn attach(&self, instance_id: &str, name: &str, content: &[u8]) -> Response {
        let body = seal(&self.jwk, content);
        self.app.raw(
            "PUT",
            &format!("/api/v1/submissions/{instance_id}/attachments/{name}"),
            Some(&self.token),
            "application/jose",
            body.as_bytes(),
        )
    }
}

/// A phone signed in with `token`, encrypting for the current KZ key (the programme of the form it sends is up to the caller).
pub fn phone<'a>(app: &'a TestApp, token: &str) -> Phone<'a> {
    phone_for(app, token, "kz")
}

/// A phone encrypting for `programme`'s current key.
pub fn phone_for<'a>(app: &'a TestApp, token: &str, programme: &str) -> Phone<'a> {
    Phone {
        app,
        jwk: app
            .get(
                &format!("/api/v1/programmes/{programme}/keys/current"),
                token,
            )
            .body,
        token: token.to_string(),
    }
}
