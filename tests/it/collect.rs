//! `casesync collect`, the reference phone, against a real server: sign in,
//! sync, fill, push with attachments; and a server killed with SIGKILL in
//! the middle of a 2,000-submission push loses nothing it acknowledged.

use crate::common;

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
    assert!(phone.join("forms/kz.referral@2021.1.1.json").is_file());
    assert!(
        !phone.join("forms/bt.registration@2021.11.2.json").exists(),
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
    let token = server.login("admin", initial.trim()).body["token"]
        .as_str()
        .unwrap()
        .to_string();
    let changed = server.post(
        "/api/v1/me/password",
        Some(&token),
        json!({"current_password": initial.trim(), "new_password": ADMIN_PASSWORD}),
    );
    assert_eq!(changed.status, 200, "{}", changed.text);
    // The one-time session ended with the change; the answer has a fresh one.
    let token = changed.body["token"].as_str().unwrap().to_string();
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

/// Runs the collector with `password` in CASESYNC_COLLECT_PASSWORD (none
/// when None) and `stdin` on its standard input.
fn collect_with(phone: &Path, args: &[&str], password: Option<&str>, stdin: &str) -> Output {
    use std::io::Write;
    let mut command = Command::new(BIN);
    command
        .arg("collect")
        .arg("--dir")
        .arg(phone)
        .args(args)
        .env_remove("CASESYNC_COLLECT_PASSWORD")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(p) = password {
        command.env("CASESYNC_COLLECT_PASSWORD", p);
    }
    let mut child = command.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_device_token_signs_in_from_a_private_file_and_a_revoked_one_says_sign_in_again() {
    use std::os::unix::fs::PermissionsExt;
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (worker_id, _) = app.user(&admin, "aigerim", "field_worker", &["KZ-CAM-ALA"]);
    let made = app.post(
        "/api/v1/tokens",
        &admin,
        json!({ "user_id": worker_id, "label": "tablet 7" }),
    );
    assert_eq!(made.status, 201, "{}", made.text);
    let work = tempfile::tempdir().unwrap();
    let phone = work.path().join("phone");
    let token_file = work.path().join("device-token");
    std::fs::write(
        &token_file,
        format!("{}\n", made.body["token"].as_str().unwrap()),
    )
    .unwrap();
    let server = app.url("");

    // Readable by others: refused, naming the fix; nothing kept.
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let args = [
        "login",
        "--server",
        &server,
        "--token-file",
        token_file.to_str().unwrap(),
    ];
    let out = collect_with(&phone, &args, None, "");
    assert!(!out.status.success());
    assert!(
        text(&out).contains(&format!("chmod 600 {}", token_file.display())),
        "{}",
        text(&out)
    );
    assert!(!phone.join("session.json").exists());

    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = collect_with(&phone, &args, None, "");
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("as aigerim"), "{}", text(&out));
    let session: Value =
        serde_json::from_slice(&std::fs::read(phone.join("session.json")).unwrap()).unwrap();
    assert_eq!(session["device_token"], true);
    collect_ok(&phone, &["pull"]);
    let referral = answers(work.path(), "kz.referral");
    collect_ok(&phone, &["fill", "kz.referral", referral.to_str().unwrap()]);

    // The phone is reported lost: its token is revoked. The push says to
    // sign in again, and how, not to wait for the network.
    let revoked = app.delete(
        &format!("/api/v1/tokens/{}", made.body["id"].as_str().unwrap()),
        &admin,
    );
    assert_eq!(revoked.status, 200, "{}", revoked.text);
    let out = collect(&phone, &["push"]);
    assert!(!out.status.success());
    let said = text(&out);
    assert!(said.contains("sign in again"), "{said}");
    assert!(
        said.contains(&format!("login --server {server} --token-file")),
        "{said}"
    );
    assert!(!said.contains("reachable"), "{said}");
    assert!(collect_ok(&phone, &["status"]).starts_with("1 queued, 0 sent, 0 refused"));
}

#[test]
fn a_one_time_password_is_changed_at_the_prompt() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let site = app.site_id(&admin, "KZ-CAM-ALA");
    let made = app.post(
        "/api/v1/users",
        &admin,
        json!({"username": "saule", "role": "field_worker", "site_ids": [site]}),
    );
    assert_eq!(made.status, 201, "{}", made.text);
    let one_time = made.body["one_time_password"].as_str().unwrap().to_string();
    let work = tempfile::tempdir().unwrap();
    let phone = work.path().join("phone");
    let server = app.url("");
    let login = ["login", "--server", &server, "--username", "saule"];

    // No terminal and no --new-password-stdin: say how to give one.
    let out = collect_with(&phone, &login, Some(&one_time), "");
    assert!(!out.status.success());
    assert!(
        text(&out).contains("--new-password-stdin"),
        "{}",
        text(&out)
    );
    assert!(!text(&out).contains("on the web"), "{}", text(&out));

    // A refused new password is explained and asked for again.
    let chosen = "Steppe-wind-over-Almaty-2026";
    let mut with_stdin = login.to_vec();
    with_stdin.push("--new-password-stdin");
    let out = collect_with(
        &phone,
        &with_stdin,
        Some(&one_time),
        &format!("short\n{chosen}\n"),
    );
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("the server refused that password: "),
        "{said}"
    );
    assert!(said.contains("signed in to"), "{said}");

    // The new password is the account's; the kept session works.
    let again = app.login("saule", chosen);
    assert_eq!(again.status, 201, "{}", again.text);
    assert_eq!(again.body["password_change_required"], false);
    assert_eq!(app.login("saule", &one_time).status, 401);
    assert!(collect_ok(&phone, &["pull"]).contains("1 key(s)"));
}

/// Fills a template the way a person would: each `null` whose question the
/// fixture answers is replaced in place (a repeat group's one entry by the
/// fixture's first); notes stay.
fn fill_in(template: &str, answers: &Value) -> String {
    let mut path: Vec<String> = Vec::new();
    let mut root_seen = false;
    let mut out = String::new();
    for line in template.lines() {
        let trimmed = line.trim();
        let comma = if trimmed.ends_with(',') { "," } else { "" };
        let bare = trimmed.trim_end_matches(',');
        if trimmed.starts_with("//") || trimmed.is_empty() {
        } else if bare == "{" {
            if root_seen {
                path.push("0".into());
            }
            root_seen = true;
        } else if bare == "}" || bare == "]" {
            path.pop();
        } else if let Some(rest) = bare.strip_prefix('"') {
            let (key, value) = rest.split_once("\": ").unwrap();
            match value {
                "{" | "[" => path.push(key.to_string()),
                "null" => {
                    let pointer: String = path
                        .iter()
                        .chain(std::iter::once(&key.to_string()))
                        .map(|k| format!("/{k}"))
                        .collect();
                    if let Some(v) = answers.pointer(&pointer) {
                        let indent = &line[..line.len() - line.trim_start().len()];
                        out.push_str(&format!("{indent}\"{key}\": {v}{comma}\n"));
                        continue;
                    }
                }
                other => panic!("unexpected template line {other}"),
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[test]
fn templates_for_a_kz_and_a_bt_form_are_read_back_by_fill_and_accepted() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    app.user(&admin, "aigerim", "field_worker", &["KZ-CAM-ALA"]);
    app.user(&admin, "dorji", "field_worker", &["BT-NCWC"]);
    let work = tempfile::tempdir().unwrap();
    let server = app.url("");
    for (user, form, label, choice) in [
        (
            "aigerim",
            "kz.referral",
            "Professional title (if the referrer is not a member of the public)",
            "\"professional\" = ",
        ),
        ("dorji", "bt.registration", "", ""),
    ] {
        let phone = work.path().join(user);
        collect_ok(&phone, &["login", "--server", &server, "--username", user]);
        collect_ok(&phone, &["pull"]);
        let file = work.path().join(format!("{form}.answers"));
        let out = collect_ok(&phone, &["template", form, "--out", file.to_str().unwrap()]);
        assert!(out.contains("fill in the answers"), "{out}");
        let template = std::fs::read_to_string(&file).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "an answers file will hold a child's details"
        );
        for expected in [
            "YYYY-MM-DD",
            "; required",
            "; optional",
            "applies only when \"",
        ] {
            assert!(
                template.contains(expected),
                "{form}: {expected}\n{template}"
            );
        }
        assert!(
            template.contains(label) && template.contains(choice),
            "{template}"
        );
        assert!(
            !template.contains("{\"field\""),
            "no rule as JSON: {template}"
        );
        // Never over a person's file.
        let again = collect(&phone, &["template", form, "--out", file.to_str().unwrap()]);
        assert!(!again.status.success());
        assert!(text(&again).contains("already exists"), "{}", text(&again));

        // Unanswered, it is refused on the phone by label, nothing queued.
        let out = collect(&phone, &["fill", form, file.to_str().unwrap()]);
        assert!(!out.status.success());
        let said = text(&out);
        assert!(
            said.contains("\" (/") && said.contains("): is required"),
            "{said}"
        );

        // Answered in place (notes kept), it is queued and stored.
        let fixture_file = answers(work.path(), form); // and its attachment files
        let fixture: Value =
            serde_json::from_str(&std::fs::read_to_string(fixture_file).unwrap()).unwrap();
        std::fs::write(&file, fill_in(&template, &fixture)).unwrap();
        collect_ok(&phone, &["fill", form, file.to_str().unwrap()]);
        let pushed = collect_ok(&phone, &["push"]);
        assert!(
            pushed.contains("1 stored, 0 already stored, 0 refused"),
            "{form}: {pushed}"
        );
    }
}

#[test]
fn a_refusal_names_the_field_in_words_and_a_fixed_item_is_retried() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    app.user(&admin, "aigerim", "field_worker", &["KZ-CAM-ALA"]);
    let work = tempfile::tempdir().unwrap();
    let phone = work.path().join("phone");
    collect_ok(
        &phone,
        &["login", "--server", &app.url(""), "--username", "aigerim"],
    );
    collect_ok(&phone, &["pull"]);

    // A referral whose checks on the phone were older than the server's
    // (written straight into the queue): a professional title for a
    // referrer from the public.
    let referral = answers(work.path(), "kz.referral");
    let mut data: Value =
        serde_json::from_str(&std::fs::read_to_string(&referral).unwrap()).unwrap();
    data["referrer"]["referrer_category"] = json!("member_of_public");
    data["child"]["child_sex"] = json!("robot");
    let state: Value =
        serde_json::from_slice(&std::fs::read(phone.join("state.json")).unwrap()).unwrap();
    let key = state["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["programme"] == "kz")
        .unwrap();
    let public = casesync::crypto::keys::public_key_from_jwk(&key["jwk"]).unwrap();
    let instance = uuid::Uuid::new_v4().to_string();
    let case = uuid::Uuid::new_v4().to_string();
    let now = "2026-03-02T10:15:00Z";
    let envelope = json!({
        "instance_id": instance, "form_id": "kz.referral", "form_version": "2021.1.1",
        "case_id": case, "device_id": "collector-test", "started_at": now, "completed_at": now,
        "data": data, "attachments": [],
    });
    let jwe = casesync::crypto::jwe::encrypt(
        envelope.to_string().as_bytes(),
        key["kid"].as_str().unwrap(),
        &public,
    );
    let queued = json!({
        "instance_id": instance, "form_id": "kz.referral", "form_version": "2021.1.1",
        "case_id": case, "submission": jwe, "attachments": [], "receipt": null,
        "queued_at": chrono::Utc::now().to_rfc3339(),
    });
    std::fs::write(
        phone.join(format!("queue/000000000-{instance}.json")),
        queued.to_string(),
    )
    .unwrap();
    let status = collect_ok(&phone, &["status"]);
    assert!(
        status.contains("queued:\n  000000000  kz.referral 2021.1.1  case ")
            && status.contains("(no number synced yet)  filled under a minute ago"),
        "{status}"
    );

    // The refusal says which question, when it applies, in words.
    let pushed = collect_ok(&phone, &["push"]);
    assert!(pushed.contains("1 refused"), "{pushed}");
    let title = "\"Professional title (if the referrer is not a member of the public)\" (/referrer/referrer_professional_title): does not apply here, so must be left empty: it applies only when \"Whether the referral was made by a member of the public or a professional\" is \"";
    assert!(pushed.contains(title), "{pushed}");
    assert!(
        pushed.contains("\"Child's gender\" (/child/child_sex): is not allowed here: must be one of \"Female\", \"Male\", \"Other\", \"Unknown\""),
        "{pushed}"
    );
    assert!(!pushed.contains("{\""), "no JSON: {pushed}");
    assert!(pushed.contains("collect retry"), "{pushed}");
    let status = collect_ok(&phone, &["status"]);
    assert!(
        status.starts_with("0 queued, 0 sent, 1 refused"),
        "{status}"
    );
    assert!(
        status.contains("refused:\n  000000000  kz.referral"),
        "{status}"
    );
    assert!(status.contains(title), "{status}");

    // Fixed in the answers file and sent again: same case, stored.
    let out = collect_ok(
        &phone,
        &["retry", "0", "--answers", referral.to_str().unwrap()],
    );
    assert!(out.contains("1 item(s) queued again"), "{out}");
    assert!(
        out.contains("1 stored, 0 already stored, 0 refused"),
        "{out}"
    );
    let opened: i64 = cases::table
        .filter(cases::id.eq(&case))
        .count()
        .get_result(&mut app.conn())
        .unwrap();
    assert_eq!(
        opened, 1,
        "the retried referral opened the case the phone made up"
    );
    assert!(collect_ok(&phone, &["status"]).starts_with("0 queued, 1 sent, 0 refused"));
    assert_eq!(
        collect_ok(&phone, &["retry"]).trim(),
        "nothing refused to send again"
    );
}
