//! Bad input gets its status and a problem+json body, and changes nothing.

use crate::common;

use casesync::db::schema::{audit_log, sites, tokens, user_sites, users};
use common::phone::seal;
use common::phone::{fixture, form_envelope, phone, Phone};
use common::TestApp;
use diesel::prelude::*;
use serde_json::{json, Value};

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

/// Sends envelope JSON text as it is written (a `Value` cannot hold a key
/// twice), encrypted as a phone would.
fn send_text(phone: &Phone<'_>, text: &str) -> common::Response {
    phone.send_raw(&seal(&phone.jwk, text.as_bytes()))
}

fn pointer_of(body: &Value) -> &str {
    body["errors"][0]["pointer"].as_str().unwrap_or_default()
}

/// Hardening (#14, item 15): a key twice in one object is ambiguous (serde
/// keeps the last, another reader the first), so it is refused (400, naming
/// the key's pointer) in API bodies and in the envelopes phones send, at
/// any depth; so is a NUL anywhere. Nothing is stored.
#[test]
fn a_key_twice_or_a_nul_is_refused_in_bodies_and_envelopes() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (_, worker) = app.user(&admin, "worker", "field_worker", &["KZ-CAM-ALA"]);
    let before = snapshot(&app);

    for (body, pointer) in [
        (
            r#"{"username":"newbie","role":"viewer","role":"admin"}"#,
            "/role",
        ),
        (
            r#"{"username":"newbie","username":"admin2","role":"viewer"}"#,
            "/username",
        ),
        (
            r#"{"username":"newbie","role":"viewer","display_name":"a\u0000b"}"#,
            "/display_name",
        ),
    ] {
        let res = app.raw(
            "POST",
            "/api/v1/users",
            Some(&admin),
            "application/json",
            body.as_bytes(),
        );
        let problem = res.assert_problem(400, "bad_request");
        assert_eq!(pointer_of(problem), pointer, "{body}");
    }
    let res = app.raw(
        "POST",
        "/api/v1/sites",
        Some(&admin),
        "application/json",
        br#"{"code":"KZ-NEW","name":"One","programme":"kz","name":"Two"}"#,
    );
    assert_eq!(pointer_of(res.assert_problem(400, "bad_request")), "/name");
    assert_eq!(snapshot(&app), before, "nothing changed");

    let phone = phone(&app, &worker);
    let case_id = uuid::Uuid::new_v4().to_string();
    let mut data = fixture("kz.referral");
    data["child"]["child_name"] = json!("Dana Ambiguous");
    let envelope = form_envelope("kz.referral", &case_id, data);
    let text = envelope.to_string();
    let other_id = uuid::Uuid::new_v4().to_string();
    let twice = |key: &str, value: &Value| {
        let plain = format!("\"{key}\":{}", envelope[key]);
        assert!(text.contains(&plain), "{key}");
        text.replacen(&plain, &format!("{plain},\"{key}\":{value}"), 1)
    };
    for (sent, pointer) in [
        (twice("instance_id", &json!(other_id)), "/instance_id"),
        (
            twice("form_id", &json!("kz.initial_assessment")),
            "/form_id",
        ),
        (
            text.replacen(
                "\"child_name\":\"Dana Ambiguous\"",
                "\"child_name\":\"Dana Ambiguous\",\"child_name\":\"Someone Else\"",
                1,
            ),
            "/data/child/child_name",
        ),
        (
            text.replacen("Dana Ambiguous", "Dana\\u0000Ambiguous", 1),
            "/data/child/child_name",
        ),
    ] {
        let res = send_text(&phone, &sent);
        let problem = res.assert_problem(400, "bad_request");
        assert_eq!(pointer_of(problem), pointer, "{}", res.text);
    }
    assert_eq!(app.stored_submissions(), 0, "nothing was stored");
    // The same envelope written once is taken.
    assert_eq!(send_text(&phone, &text).status, 201);
}

/// Hardening (#14, item 15): NUL and the Unicode bidirectional controls
/// (which make a name or an id show as something else) are refused in
/// usernames, site codes, people's names and the envelope's identifiers
/// (422, naming the field and the character). Nothing is stored.
#[test]
fn bidirectional_controls_are_refused_in_names_and_identifiers() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (spare, worker) = app.user(&admin, "worker", "field_worker", &["KZ-CAM-ALA"]);
    let before = snapshot(&app);
    for (c, code) in [
        ('\u{202E}', "U+202E"),
        ('\u{2066}', "U+2066"),
        ('\u{200F}', "U+200F"),
        ('\u{061C}', "U+061C"),
    ] {
        let res = app.post(
            "/api/v1/users",
            &admin,
            json!({ "username": format!("new{c}user"), "role": "viewer" }),
        );
        assert_eq!(
            pointer_of(res.assert_problem(422, "validation")),
            "/username"
        );
        let res = app.post(
            "/api/v1/users",
            &admin,
            json!({ "username": "newuser", "role": "viewer", "display_name": format!("Aigerim {c}vonrul") }),
        );
        let problem = res.assert_problem(422, "validation");
        assert_eq!(pointer_of(problem), "/display_name");
        assert!(
            problem["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains(code),
            "{problem}"
        );
        let res = app.patch(
            &format!("/api/v1/users/{spare}"),
            &admin,
            json!({ "display_name": format!("Worker{c}") }),
        );
        assert_eq!(
            pointer_of(res.assert_problem(422, "validation")),
            "/display_name"
        );
        let res = app.post(
            "/api/v1/sites",
            &admin,
            json!({ "code": format!("KZ-{c}X"), "name": format!("Site {c}A"), "programme": "kz" }),
        );
        let problem = res.assert_problem(422, "validation");
        let pointers: Vec<&str> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["pointer"].as_str().unwrap())
            .collect();
        assert_eq!(pointers, ["/code", "/name"], "{problem}");
        let site = app.site_id(&admin, "KZ-CAM-ALA");
        let res = app.patch(
            &format!("/api/v1/sites/{site}"),
            &admin,
            json!({ "name": format!("Almaty{c}") }),
        );
        assert_eq!(pointer_of(res.assert_problem(422, "validation")), "/name");
    }
    assert_eq!(snapshot(&app), before, "nothing changed");

    let phone = phone(&app, &worker);
    for (field, pointer) in [
        ("child", "/data/child/child_name"),
        ("device_id", "/device_id"),
    ] {
        let mut data = fixture("kz.referral");
        if field == "child" {
            data["child"]["child_name"] = json!("Dana \u{202E}anaD");
        }
        let mut envelope = form_envelope("kz.referral", &uuid::Uuid::new_v4().to_string(), data);
        if field == "device_id" {
            envelope["device_id"] = json!("tablet\u{2067}-7");
        }
        let res = phone.send(&envelope);
        let problem = res.assert_problem(422, "validation");
        let pointers: Vec<&str> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["pointer"].as_str().unwrap())
            .collect();
        assert_eq!(pointers, [pointer], "{problem}");
    }
    assert_eq!(app.stored_submissions(), 0, "nothing was stored");
}
