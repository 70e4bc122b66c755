//! What the ODK tests share: a phone's device token and Basic sign-in,
//! Collect's multipart upload, the parts of an encrypted submission, the
//! view of a case two servers must agree on, and the ODK tools (JavaRosa
//! inside ODK Validate) found through CASESYNC_TEST_ODK_VALIDATE_JAR.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use casesync::crypto::odk;
use casesync::odk::{instance, nodes::FormTable};
use serde_json::{json, Map, Value};

use super::phone::{attachment_content, declarations};
use super::{agent, Response, TestApp};

/// A device token for the user `user_id`, made by `admin`.
pub fn device_token(app: &TestApp, admin: &str, user_id: &str) -> String {
    let res = app.post(
        "/api/v1/tokens",
        admin,
        json!({ "user_id": user_id, "label": "ODK Collect" }),
    );
    assert_eq!(res.status, 201, "{}", res.text);
    res.body["token"].as_str().unwrap().to_string()
}

pub fn basic(username: &str, token: &str) -> String {
    format!(
        "Basic {}",
        STANDARD.encode(format!("{username}:{token}").as_bytes())
    )
}

pub fn get(app: &TestApp, path: &str, auth: Option<&str>) -> Response {
    let mut req = agent().get(app.url(path));
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    Response::from(req.call().unwrap())
}

/// One part of a multipart upload: field name, file name, bytes.
pub type Part = (String, Vec<u8>);

pub const BOUNDARY: &str = "----casesync-test-boundary-7d2a";

pub fn multipart_body(parts: &[Part]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, bytes) in parts {
        let kind = if name == "xml_submission_file" {
            "text/xml"
        } else {
            "application/octet-stream"
        };
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}\"\r\nContent-Type: {kind}\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

pub fn post_body(app: &TestApp, path: &str, auth: &str, body: &[u8]) -> Response {
    Response::from(
        agent()
            .post(app.url(path))
            .header("Authorization", auth)
            .header("X-OpenRosa-Version", "1.0")
            .content_type(format!("multipart/form-data; boundary={BOUNDARY}"))
            .send(body)
            .unwrap(),
    )
}

/// The parts Collect sends for an encrypted submission.
pub fn parts_of(encrypted: &odk::Encrypted) -> Vec<Part> {
    std::iter::once((
        "xml_submission_file".to_string(),
        encrypted.manifest.clone().into_bytes(),
    ))
    .chain(
        encrypted
            .files
            .iter()
            .map(|f| (f.name.clone(), f.bytes.clone())),
    )
    .collect()
}

/// The case and timeline with what differs between two servers (ids the
/// database made, times the server made) left out.
pub fn comparable(mut value: Value) -> Value {
    fn strip(v: &mut Value) {
        match v {
            // Ids each server made (sites, people, the child's record).
            Value::String(s)
                if s.get(..36)
                    .is_some_and(|p| uuid::Uuid::parse_str(p).is_ok()) =>
            {
                s.replace_range(..36, "<id>");
            }
            Value::Object(map) => {
                map.retain(|k, _| {
                    !(k == "id"
                        || k == "received_at"
                        || k == "updated_at"
                        || k == "created_at"
                        || k == "stored_at"
                        || k == "recorded_at"
                        || k == "etag"
                        // Hours late now: the clock moved between reads.
                        || k == "late")
                });
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut value);
    value
}

/// The answers' files, as the phone attaches them (manifest order).
pub fn media_of(answers: &Value) -> Vec<(String, Vec<u8>)> {
    declarations(answers)
        .iter()
        .map(|d| {
            let name = d["name"].as_str().unwrap().to_string();
            let content = attachment_content(&name);
            (name, content)
        })
        .collect()
}

pub fn required() -> bool {
    std::env::var("CASESYNC_TEST_REQUIRE_ODK").is_ok_and(|v| v == "1")
}

/// The tool named by `var`, when it and `program` are there; otherwise
/// `None` after saying why (or a failure under CASESYNC_TEST_REQUIRE_ODK=1).
pub fn tool(var: &str, program: &str) -> Option<PathBuf> {
    let path = std::env::var_os(var).map(PathBuf::from);
    let runs = Command::new(program)
        .arg(if program == "java" {
            "-version"
        } else {
            "--version"
        })
        .output()
        .is_ok_and(|o| o.status.success());
    let why = match &path {
        None => format!("{var} is not set"),
        Some(p) if !p.exists() => format!("{var}={} does not exist", p.display()),
        Some(_) if !runs => format!("{program} does not run"),
        Some(_) => return path,
    };
    if required() {
        panic!("CASESYNC_TEST_REQUIRE_ODK=1 but {why}");
    }
    eprintln!("SKIPPED: {why} (.ci/run installs the ODK tools)");
    None
}

pub fn validate_jar() -> Option<PathBuf> {
    tool("CASESYNC_TEST_ODK_VALIDATE_JAR", "java")
}

pub fn compile_fill(jar: &Path, dir: &Path) -> PathBuf {
    let classes = dir.join("classes");
    std::fs::create_dir_all(&classes).unwrap();
    let javac = Command::new("javac")
        .arg("-d")
        .arg(&classes)
        .arg("-cp")
        .arg(jar)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/odk/Fill.java"))
        .output()
        .unwrap();
    assert!(
        javac.status.success(),
        "{}",
        String::from_utf8_lossy(&javac.stderr)
    );
    classes
}

/// Fills the XForm at `form_path` in JavaRosa (`classes`: Fill.java built
/// by [`compile_fill`]) with `answers` of `table`'s form, as a person steps
/// through it in Collect, plus `more` (`Q`/`H`, path, value lines); the
/// form's attachments (the case list) are read from `media`. The instance
/// XML Collect would send, or what JavaRosa refused.
pub fn javarosa_fill(
    jar: &Path,
    classes: &Path,
    form_path: &Path,
    table: &FormTable,
    answers: &Map<String, Value>,
    more: &[String],
    media: Option<&Path>,
) -> Result<String, String> {
    // JavaRosa numbers every step (/data[1]/child[1]/siblings[2]/name[1]).
    let mut lines: Vec<String> = instance::answer_paths(table, answers)
        .into_iter()
        .map(|answer| {
            let numbered: Vec<String> = answer
                .path
                .split('/')
                .skip(1)
                .map(|step| {
                    if step.ends_with(']') {
                        step.to_string()
                    } else {
                        format!("{step}[1]")
                    }
                })
                .collect();
            let value = answer
                .value
                .replace('\\', "\\\\")
                .replace('\n', "\\n")
                .replace('\t', "\\t");
            let how = if answer.asked { "Q" } else { "H" };
            format!("{how}\t/{}\t{value}", numbered.join("/"))
        })
        .collect();
    lines.extend(more.iter().cloned());
    let answers_path = form_path.with_extension("tsv");
    std::fs::write(&answers_path, lines.join("\n")).unwrap();
    let classpath = format!("{}:{}", jar.display(), classes.display());
    let mut java = Command::new("java");
    java.args([
        "-Djava.awt.headless=true",
        "-Duser.timezone=GMT+05:00",
        "-cp",
        &classpath,
        "Fill",
    ])
    .arg(form_path)
    .arg(&answers_path);
    if let Some(media) = media {
        java.arg(media);
    }
    let out = java.output().unwrap();
    let xml = String::from_utf8(out.stdout).unwrap();
    if !out.status.success() {
        return Err(format!(
            "JavaRosa refused answers of {}:\n{}",
            table.meta.id,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(xml)
}
