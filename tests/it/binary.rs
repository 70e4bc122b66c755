//! The real `casesync` binary: `serve` on a fresh directory, a graceful drain
//! on SIGTERM, and the administration commands.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::bin::{cli, command, serve, BIN};
use common::{agent, Response, TestDb};
use serde_json::{json, Value};

#[test]
fn serve_on_a_fresh_directory_then_drain_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new();
    // Every login after one failure is held back 1.5 s: an in-flight request.
    let server = serve(
        dir.path(),
        &db,
        &[
            ("CASESYNC_LOGIN__SLOW_AFTER", "0"),
            ("CASESYNC_LOGIN__DELAY_MS", "1500"),
            ("CASESYNC_LOGIN__MAX_DELAY_MS", "1500"),
        ],
    );
    let file = dir.path().join("data/initial-admin-password");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Children's data and keys: the directory and its files are private.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.path().join("data")), 0o700);
    assert_eq!(mode(&dir.path().join("data/master.key")), 0o600);
    assert_eq!(mode(&dir.path().join("data/audit.key")), 0o600);
    if db.url.is_none() {
        let file = dir.path().join("data/casesync.db");
        assert!(file.is_file(), "embedded SQLite in ./data");
        assert_eq!(mode(&file), 0o600);
        assert!(
            !casesync::db::encryption::is_plaintext(&file).unwrap(),
            "encrypted at rest"
        );
    }
    let password = std::fs::read_to_string(&file).unwrap().trim().to_string();
    let login = server.login("admin", &password);
    assert_eq!(login.status, 201, "{}", login.text);
    let token = login.body["token"].as_str().unwrap().to_string();
    assert_eq!(server.get("/api/v1/me", &token).body["username"], "admin");

    server
        .login("admin", "wrong one")
        .assert_problem(401, "unauthorized");
    let base = server.base.clone();
    let in_flight = std::thread::spawn(move || {
        let res = agent()
            .post(format!("{base}/api/v1/sessions"))
            .send_json(json!({ "username": "admin", "password": password }));
        Response::from(res.expect("the in-flight request is answered"))
    });
    std::thread::sleep(Duration::from_millis(400));
    server.terminate();
    let answered = in_flight.join().unwrap();
    assert_eq!(
        answered.status, 201,
        "drained, not dropped: {}",
        answered.text
    );
    let status = server.wait(Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
}

#[test]
fn administration_commands_work_against_the_same_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new();
    let out = cli(dir.path(), &db, &["migrate"], None);
    assert!(out.contains("migration(s) applied"), "{out}");

    let sites = cli(dir.path(), &db, &["sites", "list"], None);
    assert!(
        sites.contains("KZ-CAM-ALA") && sites.contains("BT-NCWC"),
        "{sites}"
    );
    let out = cli(
        dir.path(),
        &db,
        &[
            "sites",
            "add",
            "KZ-CAM-TEST",
            "CAM Test",
            "--programme",
            "kz",
        ],
        None,
    );
    assert!(out.contains("created site KZ-CAM-TEST"), "{out}");

    let out = cli(
        dir.path(),
        &db,
        &[
            "users",
            "add",
            "gulnara",
            "--role",
            "field_worker",
            "--site",
            "KZ-CAM-TEST",
        ],
        None,
    );
    let one_time = out.rsplit(": ").next().unwrap().trim().to_string();
    assert_eq!(one_time.len(), 20, "{out}");
    let listed = cli(dir.path(), &db, &["users", "list"], None);
    assert!(
        listed.contains("gulnara")
            && listed.contains("field_worker")
            && listed.contains("KZ-CAM-TEST")
    );

    let out = cli(
        dir.path(),
        &db,
        &[
            "tokens", "create", "gulnara", "--label", "tablet 7", "--days", "30",
        ],
        None,
    );
    let device_token = out.lines().last().unwrap().trim().to_string();
    assert!(device_token.starts_with("cs_"), "{out}");
    let token_id = out.split_whitespace().nth(2).unwrap().to_string();
    assert!(cli(dir.path(), &db, &["tokens", "list"], None).contains(&token_id));

    // The server started afterwards honours what the CLI made.
    let server = serve(dir.path(), &db, &[]);
    assert_eq!(
        server.get("/api/v1/me", &device_token).body["username"],
        "gulnara"
    );
    let login = server.login("gulnara", &one_time);
    assert_eq!(
        login.body["password_change_required"], true,
        "{}",
        login.text
    );

    cli(dir.path(), &db, &["tokens", "revoke", &token_id], None);
    server
        .get("/api/v1/me", &device_token)
        .assert_problem(401, "unauthorized");

    let out = cli(
        dir.path(),
        &db,
        &["users", "set-password", "gulnara"],
        Some("a-password-from-stdin\n"),
    );
    assert!(out.contains("password set"), "{out}");
    let login = server.login("gulnara", "a-password-from-stdin");
    assert_eq!(login.status, 201, "{}", login.text);
    let session = login.body["token"].as_str().unwrap().to_string();

    cli(dir.path(), &db, &["users", "disable", "gulnara"], None);
    server
        .get("/api/v1/me", &session)
        .assert_problem(401, "unauthorized");
    server.terminate();
    assert!(server.wait(Duration::from_secs(20)).success());
}

#[test]
fn bad_configuration_is_refused_without_echoing_secrets() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("casesync.toml"),
        "database_url = \"mysql://app:s3cret@db/x\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .current_dir(dir.path())
        .env_remove("CASESYNC_DATABASE_URL")
        .arg("migrate")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("database_url must start with"), "{stderr}");
    assert!(!stderr.contains("s3cret"), "{stderr}");
}

#[test]
fn forms_commands_validate_publish_and_list() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = cli(
        dir.path(),
        &db,
        &[
            "forms",
            "validate",
            root.join("form-definitions").to_str().unwrap(),
            "--fixtures",
            root.join("tests/fixtures/forms").to_str().unwrap(),
            "--only",
            "bt.registration",
        ],
        None,
    );
    assert!(out.contains("ok   bt.registration 2021.11.2"), "{out}");
    assert!(out.contains("fixtures ok"), "{out}");

    // A broken copy fails with its location and a non-zero exit.
    let broken_dir = dir.path().join("defs");
    std::fs::create_dir_all(broken_dir.join("kz")).unwrap();
    let mut form: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("form-definitions/kz/referral.json")).unwrap(),
    )
    .unwrap();
    form["properties"]["child"]["x-colour"] = json!("red");
    std::fs::write(broken_dir.join("kz/referral.json"), form.to_string()).unwrap();
    let status = command(dir.path(), &db)
        .args(["forms", "validate", broken_dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!status.status.success());
    assert!(String::from_utf8_lossy(&status.stdout).contains("/properties/child/x-colour"));

    // Publish a new version from a file; list shows both.
    form["properties"]["child"]
        .as_object_mut()
        .unwrap()
        .shift_remove("x-colour");
    form["x-form"]["version"] = json!("2026.9");
    let file = dir.path().join("referral-2026.9.json");
    std::fs::write(&file, form.to_string()).unwrap();
    cli(dir.path(), &db, &["migrate"], None);
    let out = cli(
        dir.path(),
        &db,
        &["forms", "publish", file.to_str().unwrap()],
        None,
    );
    assert!(out.starts_with("published kz.referral 2026.9"), "{out}");
    let listed = cli(dir.path(), &db, &["forms", "list"], None);
    assert!(
        listed.contains("kz.referral") && listed.contains("2026.9"),
        "{listed}"
    );
    // Publishing the same version again is refused.
    let again = command(dir.path(), &db)
        .args(["forms", "publish", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already published"));
}

#[test]
fn keys_rotate_and_list() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new();
    // Only `serve` and `migrate` make a database (#15 item 5).
    cli(dir.path(), &db, &["migrate"], None);
    let out = cli(dir.path(), &db, &["keys", "rotate", "kz"], None);
    assert!(out.starts_with("new current key for kz: kz-"), "{out}");
    let listed = cli(dir.path(), &db, &["keys", "list"], None);
    let kz_keys: Vec<&str> = listed.lines().filter(|l| l.starts_with("kz-")).collect();
    assert_eq!(kz_keys.len(), 2, "{listed}");
    assert_eq!(
        kz_keys.iter().filter(|l| l.contains(" true ")).count(),
        1,
        "{listed}"
    );
    let refused = command(dir.path(), &db)
        .args(["keys", "rotate", "xx"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
}

/// Hardening (#7): whatever is sent — passwords, tokens good and bad, a
/// name in a refused body — the server's log (debug level) never repeats
/// it; and no response opens the API to other origins (CORS is off).
#[test]
fn logs_never_carry_secrets_or_names_and_cors_stays_off() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new();
    let server = serve(dir.path(), &db, &[("RUST_LOG", "debug")]);
    let password = std::fs::read_to_string(dir.path().join("data/initial-admin-password"))
        .unwrap()
        .trim()
        .to_string();
    let login = server.login("admin", &password);
    assert_eq!(login.status, 201, "{}", login.text);
    let first = login.body["token"].as_str().unwrap().to_string();
    // The one-time password changed first: a one-time session is refused
    // everything else (403), and whether that or a bad body (400) is found
    // first is up to which extractor finishes first.
    let chosen = "Lantern-orbit-Meadow-42-quietly";
    let changed = server.post(
        "/api/v1/me/password",
        Some(&first),
        json!({ "current_password": password, "new_password": chosen }),
    );
    assert_eq!(changed.status, 200, "{}", changed.text);
    let token = changed.body["token"].as_str().unwrap().to_string();
    let wrong = "wrong-password-do-not-log";
    server
        .login("admin", wrong)
        .assert_problem(401, "unauthorized");
    let bogus = "bogus-token-do-not-log";
    let res = agent()
        .get(format!("{}/api/v1/me", server.base))
        .header("Authorization", format!("Bearer {bogus}"))
        .call()
        .unwrap();
    assert_eq!(res.status(), 401);
    // A name in a body the server refuses (an unknown field) and in one it
    // takes apart (a bad role).
    let name = "Aigerim Nurlanovna Secret";
    let res = server.post(
        "/api/v1/users",
        Some(&token),
        json!({ "username": "x", "role": "nobody", "display_name": name }),
    );
    assert_eq!(res.status, 400, "{}", res.text);
    assert!(!res.text.contains(name), "errors never echo personal data");
    let res = server.post(
        "/api/v1/users",
        Some(&token),
        json!({ "username": "x", "role": "viewer", "child_name": name }),
    );
    assert!(res.status >= 400, "{}", res.text);

    // A query string may hold an export's terms, in someone's words.
    let recipient = "Recipient Person Do Not Log";
    let res = agent()
        .get(format!(
            "{}/api/v1/exports/cases.csv?programme=kz&identifying=true&recipient={}",
            server.base,
            recipient.replace(' ', "%20")
        ))
        .header("Authorization", format!("Bearer {token}"))
        .call()
        .unwrap();
    assert_eq!(res.status(), 403, "admins export nothing");

    // A browser's preflight from another origin learns nothing that would
    // let it call the API.
    let preflight = agent()
        .options(format!("{}/api/v1/me", server.base))
        .header("Origin", "https://evil.example")
        .header("Access-Control-Request-Method", "GET")
        .call()
        .unwrap();
    assert!(preflight
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    let cross = agent()
        .get(format!("{}/api/v1/me", server.base))
        .header("Origin", "https://evil.example")
        .header("Authorization", format!("Bearer {token}"))
        .call()
        .unwrap();
    assert!(cross.headers().get("access-control-allow-origin").is_none());
    for header in [
        "x-content-type-options",
        "x-frame-options",
        "referrer-policy",
        "content-security-policy",
        "cache-control",
    ] {
        assert!(cross.headers().get(header).is_some(), "{header}");
    }

    server.terminate();
    let logs = server.logs();
    assert!(
        logs.iter().any(|l| l.contains("/api/v1/exports/cases.csv")),
        "the requests were logged, with their path"
    );
    for secret in [
        password.as_str(),
        chosen,
        first.as_str(),
        token.as_str(),
        wrong,
        bogus,
        name,
        "Recipient",
    ] {
        assert!(
            !logs.iter().any(|l| l.contains(secret)),
            "the log repeats {secret:?}"
        );
    }
    assert!(server.wait(Duration::from_secs(20)).success());
}

/// Hardening (#14, item 11): a query string never reaches the log, at any
/// level (trace shows everything every level would) and in either format
/// (the text format appends a span field recorded later instead of
/// replacing it), on success and on every error path: 400 (a query that
/// does not parse), 401, 403, 404, 405. A token in the query string is
/// refused outright (400, naming the header to use) before anything reads
/// it, even on a route that needs no sign-in.
#[test]
fn a_query_string_never_reaches_the_log_at_any_level_or_format() {
    for format in ["text", "json"] {
        let dir = tempfile::tempdir().unwrap();
        let db = TestDb::new();
        let server = serve(
            dir.path(),
            &db,
            &[("RUST_LOG", "trace"), ("CASESYNC_LOG_FORMAT", format)],
        );
        let password = std::fs::read_to_string(dir.path().join("data/initial-admin-password"))
            .unwrap()
            .trim()
            .to_string();
        let login = server.login("admin", &password);
        assert_eq!(login.status, 201, "{}", login.text);
        let first = login.body["token"].as_str().unwrap().to_string();
        let chosen = "Lantern-orbit-Meadow-42-quietly";
        let changed = server.post(
            "/api/v1/me/password",
            Some(&first),
            json!({ "current_password": password, "new_password": chosen }),
        );
        assert_eq!(changed.status, 200, "{}", changed.text);
        let login = server.login("admin", chosen);
        assert_eq!(login.status, 201, "{}", login.text);
        let token = login.body["token"].as_str().unwrap().to_string();
        let purpose = "Purposeword Secretpurpose";
        let recipient = "Recipientword Secretrecipient";
        let terms = format!(
            "identifying=true&legal_basis=required_by_law&purpose={}&recipient={}",
            purpose.replace(' ', "%20"),
            recipient.replace(' ', "+"),
        );
        let call = |method: &str, path: &str, auth: Option<&str>| -> (u16, String) {
            let url = format!("{}{path}", server.base);
            let req = ureq::http::Request::builder().method(method).uri(&url);
            let req = match auth {
                Some(t) => req.header("Authorization", format!("Bearer {t}")),
                None => req,
            };
            let res = agent().run(req.body(()).unwrap()).unwrap();
            let status = res.status().as_u16();
            (status, res.into_body().read_to_string().unwrap_or_default())
        };
        for (method, path, auth, status) in [
            // Allowed: the query is ignored by a route that takes none.
            ("GET", format!("/api/v1/forms?{terms}"), Some(&token), 200),
            // Refused by role (admins export nothing).
            (
                "GET",
                format!("/api/v1/exports/forms/kz.referral.csv?{terms}"),
                Some(&token),
                403,
            ),
            // A query that does not parse.
            (
                "GET",
                format!("/api/v1/indicators/kz?from=not-a-date&{terms}"),
                Some(&token),
                400,
            ),
            ("GET", format!("/api/v1/me?{terms}"), None, 401),
            (
                "GET",
                format!("/api/v1/no-such-thing?{terms}"),
                Some(&token),
                404,
            ),
            ("DELETE", format!("/api/v1/me?{terms}"), Some(&token), 405),
        ] {
            let (got, text) = call(method, &path, auth.map(String::as_str));
            assert_eq!(got, status, "{format}: {method} {path}: {text}");
            for secret in ["Secretpurpose", "Secretrecipient"] {
                assert!(
                    !text.contains(secret),
                    "{format}: the answer echoes {secret}"
                );
            }
        }
        // A token in the URL, however named or spelt, is refused before
        // it is looked at: the request does nothing, and says why.
        for query in [
            format!("access_token={token}"),
            format!("programme=kz&Access_Token={token}&{terms}"),
            format!("q=Bearer%20{token}"),
        ] {
            for (method, path) in [
                ("GET", "/api/v1/me"),
                ("GET", "/healthz"),
                ("POST", "/api/v1/sessions/current"),
                ("DELETE", "/api/v1/sessions/current"),
            ] {
                let (got, text) = call(method, &format!("{path}?{query}"), None);
                assert_eq!(got, 400, "{format}: {method} {path}?…: {text}");
                let problem: Value = serde_json::from_str(&text).unwrap();
                assert!(
                    problem["detail"]
                        .as_str()
                        .unwrap()
                        .contains("Authorization: Bearer"),
                    "{text}"
                );
                assert!(!text.contains(&token));
            }
        }
        // Nothing was done with it: the session still works.
        assert_eq!(server.get("/api/v1/me", &token).status, 200);

        server.terminate();
        let logs = server.logs();
        assert!(
            logs.iter()
                .any(|l| l.contains("/api/v1/exports/forms/kz.referral.csv")),
            "{format}: the requests were logged, with their path"
        );
        for secret in [
            token.as_str(),
            first.as_str(),
            password.as_str(),
            chosen,
            "Secretpurpose",
            "Secretrecipient",
            "Purposeword",
            "Recipientword",
            "purpose=",
            "recipient=",
            "access_token",
            "Access_Token",
            "legal_basis",
        ] {
            let found: Vec<&String> = logs.iter().filter(|l| l.contains(secret)).collect();
            assert!(
                found.is_empty(),
                "{format}: the log repeats {secret:?}: {:?}",
                found.iter().take(3).collect::<Vec<_>>()
            );
        }
        assert!(server.wait(Duration::from_secs(20)).success());
    }
}
