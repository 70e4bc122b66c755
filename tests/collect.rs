//! `casesync collect`, the reference phone, against a real server: sign in,
//! sync, fill, push with attachments; and a server killed with SIGKILL in
//! the middle of a 2,000-submission push loses nothing it acknowledged.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use casesync::db::schema::{attachments, cases, submissions};
use casesync::db::DbConnection;
use common::bin::{serve, BIN};
use common::{TestApp, TestDb, ADMIN_PASSWORD, USER_PASSWORD};
use diesel::prelude::*;
use serde_json::{json, Value};

fn collect(phone: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("collect")
        .arg("--dir")
        .arg(phone)
        .args(args)
        .env("CASESYNC_COLLECT_PASSWORD", USER_PASSWORD)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn collect_ok(phone: &Path, args: &[&str]) -> String {
    let out = collect(phone, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "collect {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Writes a form's valid fixture as an answers file, with a small file for
/// every attachment it names; returns the answers file.
fn answers(dir: &Path, form_id: &str) -> PathBuf {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/forms")
        .join(form_id)
        .join("valid.json");
    let text = std::fs::read_to_string(fixture).unwrap();
    let data: Value = serde_json::from_str(&text).unwrap();
    fn files(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) if [".png", ".jpg", ".pdf"].iter().any(|e| s.ends_with(e)) => {
                out.push(s.clone())
            }
            Value::Array(items) => items.iter().for_each(|i| files(i, out)),
            Value::Object(map) => map.values().for_each(|i| files(i, out)),
            _ => {}
        }
    }
    let mut names = Vec::new();
    files(&data, &mut names);
    for name in names {
        std::fs::write(dir.join(&name), format!("bytes of {name}")).unwrap();
    }
    let path = dir.join(format!("{form_id}.json"));
    std::fs::write(&path, text).unwrap();
    path
}

fn queued_line_ids(line: &str) -> (String, Option<String>) {
    // "queued <instance> (case <case>)"
    let words: Vec<&str> = line.split_whitespace().collect();
    (
        words[1].to_string(),
        words.get(3).map(|c| c.trim_end_matches(')').to_string()),
    )
}

#[test]
fn the_collector_signs_in_syncs_fills_and_pushes_with_attachments() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    app.user(&admin, "aigerim", "field_worker", &["KZ-CAM-ALA"]);
    let work = tempfile::tempdir().unwrap();
    let phone = work.path().join("phone");
    let server = app.url("");

    collect_ok(
        &phone,
        &["login", "--server", &server, "--username", "aigerim"],
    );
    let session = std::fs::metadata(phone.join("session.json")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(session.permissions().mode() & 0o777, 0o600);
    let pulled = collect_ok(&phone, &["pull"]);
    assert!(pulled.contains("1 key(s), 0 case(s)"), "{pulled}");
    assert!(phone.join("forms/kz.referral@2021.1.json").is_file());
    assert!(
        !phone.join("forms/bt.registration@2021.1.json").exists(),
        "only the worker's programme"
    );

    // A referral with its signature: one submission, one attachment.
    let referral = answers(work.path(), "kz.referral");
    let out = collect_ok(&phone, &["fill", "kz.referral", referral.to_str().unwrap()]);
    let (instance, case) = queued_line_ids(out.trim());
    let case = case.expect("a referral opens a case");
    let pushed = collect_ok(&phone, &["push"]);
    assert!(
        pushed.contains("1 stored, 0 already stored, 0 refused, 1 attachment(s); 0 still queued"),
        "{pushed}"
    );
    let status: String = submissions::table
        .find(&instance)
        .select(submissions::status)
        .first(&mut app.conn())
        .unwrap();
    assert_eq!(status, "complete");
    let received: i64 = attachments::table
        .filter(attachments::instance_id.eq(&instance))
        .filter(attachments::received_at.is_not_null())
        .count()
        .get_result(&mut app.conn())
        .unwrap();
    assert_eq!(received, 1);

    // The case comes down with the next sync; an assessment follows.
    let pulled = collect_ok(&phone, &["pull"]);
    assert!(pulled.contains("1 case(s)"), "{pulled}");
    let assessment = answers(work.path(), "kz.initial_assessment");
    collect_ok(
        &phone,
        &[
            "fill",
            "kz.initial_assessment",
            assessment.to_str().unwrap(),
            "--case",
            &case,
        ],
    );
    let pushed = collect_ok(&phone, &["push", "--batch", "1"]);
    assert!(pushed.contains("1 stored"), "{pushed}");
    let version: i64 = cases::table
        .find(&case)
        .select(cases::version)
        .first(&mut app.conn())
        .unwrap();
    assert_eq!(version, 2);
    assert!(collect_ok(&phone, &["push"]).contains("0 stored, 0 already stored"));

    // Answers that do not fit are refused on the phone, nothing queued.
    let mut bad: Value =
        serde_json::from_str(&std::fs::read_to_string(&referral).unwrap()).unwrap();
    bad["child"]["child_sex"] = json!("robot");
    std::fs::write(&referral, bad.to_string()).unwrap();
    let out = collect(&phone, &["fill", "kz.referral", referral.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/child/child_sex"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        collect_ok(&phone, &["status"]).trim(),
        format!(
            "0 queued, 2 sent, 0 refused (see {}/failed)",
            phone.display()
        )
    );
}

fn open_db(dir: &Path, db: &TestDb) -> DbConnection {
    common::open_db(&dir.join("data"), db)
}

fn ids_in(phone: &Path, sub: &str, only_acknowledged: bool) -> HashSet<String> {
    std::fs::read_dir(phone.join(sub))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let item: Value = serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?;
            (!only_acknowledged || !item["receipt"].is_null())
                .then(|| item["instance_id"].as_str().unwrap().to_string())
        })
        .collect()
}

#[test]
fn kill_9_during_a_2000_submission_push_loses_nothing_acknowledged() {
    const TOTAL: usize = 2000;
    let work = tempfile::tempdir().unwrap();
    let db = TestDb::new();
    let server = serve(work.path(), &db, &[]);
    let addr = server.base.trim_start_matches("http://").to_string();

    // An admin with a real password, and a field worker.
    let initial = std::fs::read_to_string(work.path().join("data/initial-admin-password")).unwrap();
    let token = server
        .post(
            "/api/v1/sessions",
            None,
            json!({"username": "admin", "password": initial.trim()}),
        )
        .body["token"]
        .as_str()
        .unwrap()
        .to_string();
    let changed = server.post(
        "/api/v1/me/password",
        Some(&token),
        json!({"current_password": initial.trim(), "new_password": ADMIN_PASSWORD}),
    );
    assert_eq!(changed.status, 204, "{}", changed.text);
    let sites = server.get("/api/v1/sites", &token).body;
    let site = sites["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["code"] == "KZ-CAM-ALA")
        .unwrap()["id"]
        .clone();
    let created = server.post(
        "/api/v1/users",
        Some(&token),
        json!({"username": "aigerim", "role": "field_worker", "site_ids": [site], "password": USER_PASSWORD}),
    );
    assert_eq!(created.status, 201, "{}", created.text);

    let phone = work.path().join("phone");
    collect_ok(
        &phone,
        &["login", "--server", &server.base, "--username", "aigerim"],
    );
    collect_ok(&phone, &["pull"]);
    let referral = answers(work.path(), "kz.referral");
    collect_ok(
        &phone,
        &[
            "fill",
            "kz.referral",
            referral.to_str().unwrap(),
            "--count",
            &TOTAL.to_string(),
        ],
    );

    // Push, and kill the server once a tenth has been acknowledged.
    let push = Command::new(BIN)
        .arg("collect")
        .arg("--dir")
        .arg(&phone)
        .args([
            "push",
            "--batch",
            "10",
            "--concurrency",
            "2",
            "--retries",
            "2",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while ids_in(&phone, "sent", false).len() < TOTAL / 10 {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the push makes progress"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut server = server;
    server.child.kill().unwrap(); // SIGKILL: no drain, no goodbye
    server.child.wait().unwrap();
    let first = push.wait_with_output().unwrap();
    assert!(
        !first.status.success(),
        "the push cannot finish without a server: {}",
        String::from_utf8_lossy(&first.stdout)
    );
    let mut acknowledged = ids_in(&phone, "sent", false);
    acknowledged.extend(ids_in(&phone, "queue", true));
    assert!(acknowledged.len() < TOTAL, "killed mid-push");
    eprintln!(
        "killed after {} acknowledged: {}{}",
        acknowledged.len(),
        String::from_utf8_lossy(&first.stdout),
        String::from_utf8_lossy(&first.stderr)
    );

    // Everything acknowledged survived the kill.
    let stored: HashSet<String> = submissions::table
        .select(submissions::instance_id)
        .load::<String>(&mut open_db(work.path(), &db))
        .unwrap()
        .into_iter()
        .collect();
    let lost: Vec<&String> = acknowledged.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");

    // Same address again; the retry completes the rest exactly once.
    let bind = addr.clone();
    let server = serve(work.path(), &db, &[("CASESYNC_BIND", bind.as_str())]);
    assert_eq!(server.base, format!("http://{addr}"));
    let out = collect_ok(&phone, &["push", "--batch", "10", "--concurrency", "2"]);
    eprintln!("after the restart: {out}");
    assert!(out.contains("0 refused"), "{out}");
    assert!(out.contains("0 still queued"), "{out}");
    let mut conn = open_db(work.path(), &db);
    let rows: Vec<(String, String)> = submissions::table
        .select((submissions::instance_id, submissions::status))
        .load(&mut conn)
        .unwrap();
    assert_eq!(rows.len(), TOTAL, "each submission stored exactly once");
    assert!(rows.iter().all(|(_, status)| status == "complete"));
    assert_eq!(ids_in(&phone, "sent", false).len(), TOTAL);
    assert_eq!(ids_in(&phone, "failed", false).len(), 0);
    server.terminate();
    server.wait(Duration::from_secs(30));
}
