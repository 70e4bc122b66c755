//! Bad input gets its status and a problem+json body, and changes nothing.

mod common;

use casesync::db::schema::{audit_log, sites, tokens, user_sites, users};
use common::TestApp;
use diesel::prelude::*;
use serde_json::json;

/// Everything the identity tables hold, to compare before and after.
fn snapshot(app: &TestApp) -> String {
    let mut conn = app.conn();
    let users: Vec<(String, String, String, bool, bool, chrono::NaiveDateTime)> = users::table
        .select((
            users::id,
            users::username,
            users::password_hash,
            users::active,
            users::must_change_password,
            users::updated_at,
        ))
        .order(users::id)
        .load(&mut conn)
        .unwrap();
    let sites: Vec<(String, String, bool, chrono::NaiveDateTime)> = sites::table
        .select((sites::id, sites::name, sites::active, sites::updated_at))
        .order(sites::id)
        .load(&mut conn)
        .unwrap();
    let memberships: Vec<(String, String)> = user_sites::table
        .select((user_sites::user_id, user_sites::site_id))
        .order((user_sites::user_id, user_sites::site_id))
        .load(&mut conn)
        .unwrap();
    let tokens: Vec<(String, Option<chrono::NaiveDateTime>)> = tokens::table
        .select((tokens::id, tokens::revoked_at))
        .order(tokens::id)
        .load(&mut conn)
        .unwrap();
    format!("{users:?}\n{sites:?}\n{memberships:?}\n{tokens:?}")
}

fn audit_rows(app: &TestApp) -> i64 {
    audit_log::table
        .count()
        .get_result(&mut app.conn())
        .unwrap()
}

#[test]
fn each_bad_input_gets_its_problem_and_changes_nothing() {
    let app = TestApp::spawn_with(|s| s.max_body_bytes = 4096);
    let admin = app.admin_token();
    let (_, worker) = app.user(&admin, "worker", "field_worker", &["KZ-CAM-ALA"]);
    let before = snapshot(&app);
    let audit_before = audit_rows(&app);

    // Malformed JSON: 400, located.
    let res = app.raw(
        "POST",
        "/api/v1/users",
        Some(&admin),
        "application/json",
        b"{\"username\": ",
    );
    let body = res.assert_problem(400, "bad_request");
    assert!(body["detail"].as_str().unwrap().contains("malformed JSON"));

    // Unknown field: 400, named, with its pointer.
    let res = app.post(
        "/api/v1/users",
        &admin,
        json!({ "username": "newbie", "role": "viewer", "rol": "admin" }),
    );
    let body = res.assert_problem(400, "bad_request");
    assert_eq!(body["errors"][0]["pointer"], "/rol");
    assert!(body["detail"]
        .as_str()
        .unwrap()
        .contains("unknown field `rol`"));

    // Wrong type deep in the body: 400 at its pointer.
    let res = app.post(
        "/api/v1/users",
        &admin,
        json!({ "username": "newbie", "role": "viewer", "site_ids": ["ok", 7] }),
    );
    let body = res.assert_problem(400, "bad_request");
    assert_eq!(body["errors"][0]["pointer"], "/site_ids/1");

    // An unknown role value.
    let res = app.post(
        "/api/v1/users",
        &admin,
        json!({ "username": "newbie", "role": "superuser" }),
    );
    assert_eq!(
        res.assert_problem(400, "bad_request")["errors"][0]["pointer"],
        "/role"
    );

    // Semantically invalid: 422 with every pointer.
    let res = app.post(
        "/api/v1/users",
        &admin,
        json!({ "username": "X!", "role": "field_worker", "password": "short" }),
    );
    res.assert_problem(422, "validation");
    let pointers = res.error_pointers();
    assert_eq!(pointers, ["/username", "/password"]);
    let res = app.post(
        "/api/v1/users",
        &admin,
        json!({ "username": "newbie", "role": "field_worker", "site_ids": ["no-such-site"] }),
    );
    assert_eq!(
        res.assert_problem(422, "validation")["errors"][0]["pointer"],
        "/site_ids/0"
    );

    // No credentials, bad credentials: 401 with WWW-Authenticate.
    let res = app.request("POST", "/api/v1/users", None, Some(&json!({})));
    res.assert_problem(401, "unauthorized");
    assert!(res.header("www-authenticate").unwrap().contains("Bearer"));
    let res = app.request("GET", "/api/v1/users", Some("cs_forged"), None);
    res.assert_problem(401, "unauthorized");
    let res = app.raw("POST", "/api/v1/users", None, "application/json", b"{}");
    assert_eq!(
        res.header("www-authenticate")
            .map(|h| h.starts_with("Bearer")),
        Some(true)
    );

    // Wrong role: 403.
    app.post(
        "/api/v1/users",
        &worker,
        json!({ "username": "newbie", "role": "viewer" }),
    )
    .assert_problem(403, "forbidden");

    // Body over the limit: 413.
    let big = json!({ "username": "newbie", "role": "viewer", "display_name": "x".repeat(5000) });
    app.post("/api/v1/users", &admin, big)
        .assert_problem(413, "payload_too_large");

    // Wrong content type: 415.
    app.raw(
        "POST",
        "/api/v1/users",
        Some(&admin),
        "text/plain",
        b"username=newbie",
    )
    .assert_problem(415, "unsupported_media_type");

    // Unknown path and wrong method.
    app.get("/api/v1/nothing-here", &admin)
        .assert_problem(404, "not_found");
    app.request("PUT", "/api/v1/users", Some(&admin), Some(&json!({})))
        .assert_problem(405, "method_not_allowed");
    app.get("/api/v1/users/00000000-0000-0000-0000-000000000000", &admin)
        .assert_problem(404, "not_found");

    // Duplicate username: 409, and nothing half-made.
    app.post(
        "/api/v1/users",
        &admin,
        json!({ "username": "worker", "role": "viewer" }),
    )
    .assert_problem(409, "conflict");

    assert_eq!(snapshot(&app), before, "bad input changed the database");
    // Only the refusal is recorded (who was refused what is part of the
    // access log); bad input is not.
    let refused: Vec<String> = audit_log::table
        .filter(audit_log::action.eq("access_refused"))
        .select(audit_log::detail.assume_not_null())
        .load(&mut app.conn())
        .unwrap();
    assert_eq!(refused, ["POST /api/v1/users"]);
    assert_eq!(
        audit_rows(&app),
        audit_before + 1,
        "bad input wrote audit rows"
    );
}

#[test]
fn problems_never_echo_passwords_or_tokens() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let secret = "correct-horse-battery-staple";
    let res = app.login("nobody", secret);
    res.assert_problem(401, "unauthorized");
    assert!(!res.text.contains(secret));
    let res = app.request("GET", "/api/v1/me", Some(&format!("{admin}x")), None);
    res.assert_problem(401, "unauthorized");
    assert!(!res.text.contains(&admin));
}

#[test]
fn repeated_failed_logins_are_slowed_then_refused() {
    let app = TestApp::spawn_with(|s| {
        s.login.slow_after = 2;
        s.login.lock_after = 4;
        s.login.lock_secs = 600;
    });
    let admin = app.admin_token();
    let (_, _) = app.user(&admin, "target", "field_worker", &["KZ-CAM-ALA"]);

    for attempt in 1..=4 {
        let res = app.login("target", "wrong password!");
        res.assert_problem(401, "unauthorized");
        assert!(
            res.body["detail"]
                .as_str()
                .unwrap()
                .contains("username or password"),
            "attempt {attempt}"
        );
    }
    // Locked now: even the right password is refused, with Retry-After.
    let res = app.login("target", common::USER_PASSWORD);
    res.assert_problem(429, "too_many_requests");
    let retry: u64 = res.header("retry-after").unwrap().parse().unwrap();
    assert!(retry > 0 && retry <= 600, "{retry}");

    // The refusal and the failures are audited.
    let actions: Vec<String> = audit_log::table
        .select(audit_log::action)
        .load(&mut app.conn())
        .unwrap();
    assert_eq!(actions.iter().filter(|a| *a == "login_failed").count(), 4);
    assert!(actions.iter().any(|a| a == "login_refused"));
    // The lock is shared by every server: it lives in the database.
    let second = app.another();
    second
        .login("target", common::USER_PASSWORD)
        .assert_problem(429, "too_many_requests");
}

/// An office shares one address: guesses at many accounts from it slow
/// that address down but lock nobody out (#14.3; tests/auth_hardening.rs).
#[test]
fn one_address_guessing_many_accounts_is_slowed_not_refused() {
    let app = TestApp::spawn_with(|s| {
        s.login.slow_after = 3;
        s.login.lock_after = 5;
        s.login.address_slow_after = 3;
    });
    for i in 0..6 {
        app.login(&format!("guess{i}"), "wrong password!")
            .assert_problem(401, "unauthorized");
    }
    app.login("guess-next", "wrong password!")
        .assert_problem(401, "unauthorized");
}
