//! Identity over real HTTP: first start, login, tokens, roles, restarts.

use crate::common;

use std::os::unix::fs::PermissionsExt;

use casesync::db::schema::tokens;
use common::{TestApp, ADMIN_PASSWORD, USER_PASSWORD};
use diesel::prelude::*;
use serde_json::json;

#[test]
fn first_start_creates_admin_whose_written_password_must_be_changed() {
    let app = TestApp::spawn();
    let file = app.initial_password_file();
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the password file is private");

    let password = app.initial_admin_password();
    let res = app.login("admin", &password);
    assert_eq!(res.status, 201, "{}", res.text);
    assert_eq!(res.body["password_change_required"], true);
    assert_eq!(res.body["user"]["role"], "admin");
    let token = res.body["token"].as_str().unwrap().to_string();

    // Everything but /me and the password change waits for the new password.
    app.get("/api/v1/users", &token)
        .assert_problem(403, "password_change_required");
    assert_eq!(app.get("/api/v1/me", &token).status, 200);

    let weak = app.post(
        "/api/v1/me/password",
        &token,
        json!({ "current_password": password, "new_password": "short" }),
    );
    let body = weak.assert_problem(422, "validation");
    assert_eq!(body["errors"][0]["pointer"], "/new_password");

    let res = app.post(
        "/api/v1/me/password",
        &token,
        json!({ "current_password": password, "new_password": ADMIN_PASSWORD }),
    );
    assert_eq!(res.status, 200, "{}", res.text);
    // A UTC time with its Z, as every time the server writes (docs/api.md).
    let expires_at = res.body["expires_at"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(expires_at).is_ok() && expires_at.ends_with('Z'),
        "{expires_at}"
    );
    assert!(
        !file.exists(),
        "the stale one-time password file is removed"
    );
    // The one-time session ended with the change; the answer holds a fresh one.
    app.get("/api/v1/me", &token)
        .assert_problem(401, "unauthorized");
    let token = res.body["token"].as_str().unwrap().to_string();
    assert_eq!(app.get("/api/v1/users", &token).status, 200);

    // The old password no longer works; the new one does.
    assert_eq!(app.login("admin", &password).status, 401);
    assert_eq!(app.login("admin", ADMIN_PASSWORD).status, 201);
}

#[test]
fn login_token_me_and_logout() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (worker_id, worker) = app.user(&admin, "aigerim", "field_worker", &["KZ-CAM-ALA"]);

    let me = app.get("/api/v1/me", &worker);
    assert_eq!(me.status, 200, "{}", me.text);
    assert_eq!(me.body["id"], worker_id);
    assert_eq!(me.body["username"], "aigerim");
    assert_eq!(me.body["role"], "field_worker");
    assert_eq!(me.body["site_ids"][0], app.site_id(&admin, "KZ-CAM-ALA"));
    assert!(me.body.get("password_hash").is_none());
    assert!(!me.text.contains("argon2"));

    let res = app.request("DELETE", "/api/v1/sessions/current", Some(&worker), None);
    assert_eq!(res.status, 204);
    app.get("/api/v1/me", &worker)
        .assert_problem(401, "unauthorized");
}

#[test]
fn revoked_expired_and_disabled_tokens_are_refused() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (worker_id, worker) = app.user(&admin, "dorji", "field_worker", &["BT-NCWC"]);

    // A device token for the worker's phone, shown once, then listed without secret.
    let made = app.post(
        "/api/v1/tokens",
        &admin,
        json!({ "user_id": worker_id, "label": "Samsung A14 #3" }),
    );
    assert_eq!(made.status, 201, "{}", made.text);
    let device = made.body["token"].as_str().unwrap().to_string();
    let device_id = made.body["id"].as_str().unwrap().to_string();
    assert_eq!(app.get("/api/v1/me", &device).body["id"], worker_id);
    let listed = app.get("/api/v1/tokens", &admin);
    assert!(listed.text.contains(&device_id));
    assert!(
        !listed.text.contains(&device),
        "a listed token never shows its secret"
    );

    // Revoked.
    let res = app.delete(&format!("/api/v1/tokens/{device_id}"), &admin);
    assert_eq!(res.status, 200, "{}", res.text);
    assert!(res.body["revoked_at"].is_string());
    let refused = app.get("/api/v1/me", &device);
    refused.assert_problem(401, "unauthorized");
    assert!(refused
        .header("www-authenticate")
        .unwrap()
        .starts_with("Bearer"));

    // Expired: move the session's expiry into the past.
    assert_eq!(app.get("/api/v1/me", &worker).status, 200);
    let past = chrono::Utc::now().naive_utc() - chrono::Duration::minutes(1);
    let changed = diesel::update(tokens::table.filter(tokens::user_id.eq(&worker_id)))
        .set(tokens::expires_at.eq(past))
        .execute(&mut app.conn())
        .unwrap();
    assert!(changed >= 1);
    app.get("/api/v1/me", &worker)
        .assert_problem(401, "unauthorized");

    // Disabled: every token of the user stops working.
    let fresh = app.token_for("dorji", USER_PASSWORD);
    let res = app.patch(
        &format!("/api/v1/users/{worker_id}"),
        &admin,
        json!({ "active": false }),
    );
    assert_eq!(res.status, 200, "{}", res.text);
    app.get("/api/v1/me", &fresh)
        .assert_problem(401, "unauthorized");
    assert_eq!(app.login("dorji", USER_PASSWORD).status, 401);

    // Garbage and missing credentials.
    app.get("/api/v1/me", "cs_not-a-real-token")
        .assert_problem(401, "unauthorized");
    let none = app.request("GET", "/api/v1/me", None, None);
    none.assert_problem(401, "unauthorized");
    assert!(none.header("www-authenticate").is_some());
}

#[test]
fn roles_decide_who_sees_and_manages_users() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (_, coordinator) = app.user(&admin, "manager.almaty", "coordinator", &["KZ-CAM-ALA"]);
    let (worker_id, worker) = app.user(&admin, "sw.almaty", "field_worker", &["KZ-CAM-ALA"]);
    let (other_id, _) = app.user(&admin, "sw.nur", "field_worker", &["KZ-CSC-NUR"]);
    let (_, analyst) = app.user(&admin, "analyst", "analyst", &["KZ-CAM-ALA"]);
    let (_, viewer) = app.user(&admin, "steering", "viewer", &[]);

    // Field workers, analysts and viewers cannot list users.
    for token in [&worker, &analyst, &viewer] {
        app.get("/api/v1/users", token)
            .assert_problem(403, "forbidden");
    }
    // A coordinator sees the staff of their own site only.
    let seen = app.get("/api/v1/users", &coordinator);
    assert_eq!(seen.status, 200);
    let names: Vec<&str> = seen.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"sw.almaty"));
    assert!(!names.contains(&"sw.nur"));
    app.get(&format!("/api/v1/users/{other_id}"), &coordinator)
        .assert_problem(404, "not_found");

    // Only admins create users and sites.
    let attempt = app.post(
        "/api/v1/users",
        &coordinator,
        json!({ "username": "sneaky", "role": "admin" }),
    );
    attempt.assert_problem(403, "forbidden");
    app.post(
        "/api/v1/sites",
        &worker,
        json!({ "code": "X", "name": "X", "programme": "kz" }),
    )
    .assert_problem(403, "forbidden");

    // A coordinator makes device tokens for their own site's workers only.
    let ok = app.post(
        "/api/v1/tokens",
        &coordinator,
        json!({ "user_id": worker_id, "label": "phone 1" }),
    );
    assert_eq!(ok.status, 201, "{}", ok.text);
    app.post(
        "/api/v1/tokens",
        &coordinator,
        json!({ "user_id": other_id, "label": "phone 2" }),
    )
    .assert_problem(403, "forbidden");
    app.post(
        "/api/v1/tokens",
        &worker,
        json!({ "user_id": worker_id, "label": "my phone" }),
    )
    .assert_problem(403, "forbidden");

    // Sites are visible to every signed-in user.
    let sites = app.get("/api/v1/sites", &viewer);
    assert_eq!(sites.status, 200);
    assert!(sites.body["items"].as_array().unwrap().len() >= 30);
}

#[test]
fn admin_manages_sites_and_resets_passwords() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let created = app.post(
        "/api/v1/sites",
        &admin,
        json!({ "code": "BT-CSO-NEW", "name": "New CSO", "programme": "bt", "org_code": "NEWCSO" }),
    );
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.body["id"].as_str().unwrap();
    let renamed = app.patch(
        &format!("/api/v1/sites/{id}"),
        &admin,
        json!({ "name": "Renamed CSO" }),
    );
    assert_eq!(renamed.status, 200, "{}", renamed.text);
    assert_eq!(renamed.body["name"], "Renamed CSO");
    assert_eq!(renamed.body["org_code"], "NEWCSO");

    let duplicate = app.post(
        "/api/v1/sites",
        &admin,
        json!({ "code": "BT-CSO-NEW", "name": "Again", "programme": "bt" }),
    );
    duplicate.assert_problem(409, "conflict");

    let (user_id, user_token) = app.user(&admin, "tashi", "coordinator", &["BT-NCWC"]);
    let reset = app.request(
        "POST",
        &format!("/api/v1/users/{user_id}/password"),
        Some(&admin),
        Some(&json!({})),
    );
    assert_eq!(reset.status, 200, "{}", reset.text);
    let one_time = reset.body["one_time_password"]
        .as_str()
        .unwrap()
        .to_string();
    app.get("/api/v1/me", &user_token)
        .assert_problem(401, "unauthorized");
    let login = app.login("tashi", &one_time);
    assert_eq!(login.status, 201);
    assert_eq!(login.body["password_change_required"], true);
}

#[test]
fn a_restart_keeps_users_and_tokens() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (_, worker) = app.user(&admin, "saule", "field_worker", &["KZ-CAM-SHY"]);
    let shared = app.stop();

    let settings = common::test_settings(&shared);
    let again = TestApp::start(shared, settings);
    assert_eq!(again.get("/api/v1/me", &worker).body["username"], "saule");
    assert_eq!(again.get("/api/v1/users", &admin).status, 200);
    assert!(
        !again.initial_password_file().exists(),
        "no second admin is made on a restart"
    );
}

#[test]
fn two_servers_on_one_database_accept_each_others_tokens() {
    let first = TestApp::spawn();
    let second = first.another();
    let admin = first.admin_token();
    let (_, worker) = first.user(&admin, "pema", "field_worker", &["BT-DZ-PAR"]);
    assert_eq!(second.get("/api/v1/me", &worker).body["username"], "pema");

    // A token issued by the second is good on the first; a revocation on one
    // is seen by the other.
    let token = second.token_for("pema", USER_PASSWORD);
    assert_eq!(first.get("/api/v1/me", &token).status, 200);
    let res = second.request("DELETE", "/api/v1/sessions/current", Some(&token), None);
    assert_eq!(res.status, 204);
    first
        .get("/api/v1/me", &token)
        .assert_problem(401, "unauthorized");
}

#[test]
fn the_last_active_admin_cannot_be_disabled_or_demoted() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let me = app.get("/api/v1/me", &admin).body["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.patch(
        &format!("/api/v1/users/{me}"),
        &admin,
        json!({ "active": false }),
    )
    .assert_problem(409, "conflict");
    app.patch(
        &format!("/api/v1/users/{me}"),
        &admin,
        json!({ "role": "viewer" }),
    )
    .assert_problem(409, "conflict");
    assert_eq!(
        app.get("/api/v1/users", &admin).status,
        200,
        "still an admin"
    );

    // With a second admin, the first may step down.
    let (_, second) = app.user(&admin, "admin2", "admin", &[]);
    let res = app.patch(
        &format!("/api/v1/users/{me}"),
        &second,
        json!({ "active": false }),
    );
    assert_eq!(res.status, 200, "{}", res.text);
    app.get("/api/v1/me", &admin)
        .assert_problem(401, "unauthorized");
}

#[test]
fn every_change_is_audited_with_its_actor_and_object() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (user_id, _) = app.user(&admin, "audited", "field_worker", &["KZ-CAM-ALA"]);
    let made = app.post(
        "/api/v1/tokens",
        &admin,
        json!({ "user_id": user_id, "label": "phone" }),
    );
    let token_id = made.body["id"].as_str().unwrap().to_string();
    assert_eq!(
        app.delete(&format!("/api/v1/tokens/{token_id}"), &admin)
            .status,
        200
    );
    let mut rows = casesync::audit::recent(&mut app.conn(), 1000).unwrap();
    rows.reverse();
    let find = |action: &str, object: &str| {
        rows.iter()
            .find(|r| r.action == action && r.object_id.as_deref() == Some(object))
            .unwrap_or_else(|| panic!("{action} {object}: {rows:?}"))
    };
    let created = find("user_created", &user_id);
    assert_eq!(created.actor_role.as_deref(), Some("admin"));
    assert!(created.request_id.is_some(), "request id recorded");
    assert!(created.client_ip.is_some(), "client address recorded");
    assert_eq!(
        find("device_token_created", &token_id).detail.as_deref(),
        Some(user_id.as_str())
    );
    assert_eq!(
        find("token_revoked", &token_id).actor_role.as_deref(),
        Some("admin")
    );
    // Audit details never hold a password or a token.
    assert!(rows
        .iter()
        .all(|r| !format!("{r:?}").contains(common::USER_PASSWORD)));
    assert!(!format!("{rows:?}").contains(made.body["token"].as_str().unwrap()));
}
