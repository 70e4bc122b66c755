//! Hardening of sign-in and its reach (issue #14, items 2–7): login
//! throttling under concurrency, no lock-out from elsewhere, token scope,
//! site membership as the access boundary, password changes ending other
//! sessions, weak passwords refused. Over real HTTP, on SQLite and
//! PostgreSQL alike.

use crate::common;

use std::io::Write;
use std::process::Stdio;
use std::sync::Barrier;

use casesync::db::schema::{audit_log, tokens};
use common::build::referral;
use common::phone::{fixture, form_envelope, phone};
use common::{TestApp, USER_PASSWORD};
use diesel::prelude::*;
use serde_json::{json, Value};

fn count_action(app: &TestApp, action: &str) -> i64 {
    audit_log::table
        .filter(audit_log::action.eq(action))
        .count()
        .get_result(&mut app.conn())
        .unwrap()
}

/// A device token for `user_id`, made by the holder of `maker`; returns
/// (token id, secret).
fn device_token(app: &TestApp, maker: &str, user_id: &str) -> (String, String) {
    let made = app.post(
        "/api/v1/tokens",
        maker,
        json!({ "user_id": user_id, "label": "field phone" }),
    );
    assert_eq!(made.status, 201, "{}", made.text);
    (
        made.body["id"].as_str().unwrap().to_string(),
        made.body["token"].as_str().unwrap().to_string(),
    )
}

// ---- 2. Login throttling holds under concurrency ---------------------------

/// Counters that hold nothing back any more (a window passed with no lock,
/// a lock that expired) are pruned, so guesses at made-up usernames from
/// many addresses cannot grow the table for ever; live windows and locks
/// stay, and a real failed login's counters go once their window passes.
#[test]
fn stale_login_counters_are_pruned_and_live_ones_kept() {
    use casesync::auth::throttle;
    use casesync::db::schema::login_throttle;
    use chrono::{Duration, Utc};

    let app = TestApp::spawn();
    let window = app.settings.login.window_secs;
    let now = Utc::now().naive_utc();
    let mut conn = app.conn();
    let old = now - Duration::seconds(window * 2);
    for (key, started, locked) in [
        ("ip:stale-window", old, None),
        ("pair:expired|lock", old, Some(now - Duration::seconds(1))),
        (
            "pair:live|lock",
            old,
            Some(now + Duration::seconds(window * 4)),
        ),
        ("ip:live-window", now, None),
    ] {
        diesel::insert_into(login_throttle::table)
            .values((
                login_throttle::throttle_key.eq(key),
                login_throttle::failures.eq(3),
                login_throttle::window_started_at.eq(started),
                login_throttle::locked_until.eq(locked),
            ))
            .execute(&mut conn)
            .unwrap();
    }
    assert_eq!(throttle::prune(&mut conn, window, now).unwrap(), 2);
    let mut left: Vec<String> = login_throttle::table
        .select(login_throttle::throttle_key)
        .load(&mut conn)
        .unwrap();
    left.sort();
    assert_eq!(left, ["ip:live-window", "pair:live|lock"]);

    // A wrong password over HTTP leaves its three counters; a window later
    // they are stale and go.
    app.login("nobody-here", "a wrong guess")
        .assert_problem(401, "unauthorized");
    let counters = |conn: &mut casesync::db::DbConnection| -> i64 {
        login_throttle::table.count().get_result(conn).unwrap()
    };
    assert_eq!(counters(&mut conn), 5);
    let later = Utc::now().naive_utc() + Duration::seconds(window + 1);
    assert_eq!(throttle::prune(&mut conn, window, later).unwrap(), 4);
    assert_eq!(counters(&mut conn), 1, "only the live lock is left");
}

/// 200 guesses at one account at once: the attempt is reserved in the
/// database before the password is verified, so no more than `lock_after`
/// passwords are ever checked. Each verified wrong password leaves exactly
/// one `login_failed` audit row (written after the verification), which is
/// what is counted.
#[test]
fn parallel_guesses_verify_at_most_lock_after_passwords() {
    let app = TestApp::spawn();
    let lock_after = app.settings.login.lock_after;
    let admin = app.admin_token();
    app.user(&admin, "target", "field_worker", &["KZ-CAM-ALA"]);
    let failed_before = count_action(&app, "login_failed");

    const GUESSES: usize = 200;
    let start = Barrier::new(GUESSES);
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..GUESSES)
            .map(|i| {
                let (app, start) = (&app, &start);
                s.spawn(move || {
                    start.wait();
                    app.login("target", &format!("wrong guess number {i}"))
                        .status
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    let wrong = statuses.iter().filter(|s| **s == 401).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(wrong + refused, GUESSES, "only 401 and 429: {statuses:?}");
    let verified = count_action(&app, "login_failed") - failed_before;
    assert_eq!(
        verified as usize, wrong,
        "one audit row per verified password"
    );
    assert!(
        verified <= lock_after as i64,
        "{verified} passwords verified, at most {lock_after} allowed"
    );
    assert!(refused >= GUESSES - lock_after as usize);
    // The right password from the same place waits out the lock too.
    app.login("target", USER_PASSWORD)
        .assert_problem(429, "too_many_requests");
    println!("200 parallel guesses: {verified} passwords verified, {refused} refused");
}

/// Right passwords at once, on two servers: a success forgets the
/// account's counters while other attempts are counting against them, and
/// none fails for it. Attempts in flight count until verified, so at most
/// `lock_after` of them go ahead together; the others are told to retry.
#[test]
fn parallel_right_passwords_sign_in_or_are_told_to_retry() {
    let app = TestApp::spawn();
    let lock_after = app.settings.login.lock_after as usize;
    let admin = app.admin_token();
    app.user(&admin, "busy", "field_worker", &["KZ-CAM-ALA"]);
    let second = app.another();
    let start = Barrier::new(16);
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|n| {
                let server = if n % 2 == 0 { &app } else { &second };
                let start = &start;
                s.spawn(move || {
                    start.wait();
                    server.login("busy", USER_PASSWORD).status
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 429),
        "{statuses:?}"
    );
    assert!(
        statuses.iter().filter(|s| **s == 201).count() >= lock_after,
        "{statuses:?}"
    );
    // Nothing lingers: the successes released the account.
    assert_eq!(app.login("busy", USER_PASSWORD).status, 201);
}

// ---- 3. Nobody can lock a field worker out from elsewhere ------------------

#[test]
fn guesses_from_elsewhere_never_lock_the_worker_out() {
    let app = TestApp::spawn_with(|s| {
        s.login.slow_after = 2;
        s.login.lock_after = 4;
    });
    let admin = app.admin_token();
    let (worker_id, _) = app.user(&admin, "aigerim", "field_worker", &["KZ-CAM-ALA"]);
    let (_, device) = device_token(&app, &admin, &worker_id);

    // Ten wrong passwords from an attacker's address: slowed, then refused.
    let attacker = "127.0.0.2";
    let statuses: Vec<u16> = (0..10)
        .map(|_| {
            app.login_from(attacker, "aigerim", "not her password")
                .status
        })
        .collect();
    assert_eq!(&statuses[..4], &[401; 4], "{statuses:?}");
    assert!(statuses[4..].iter().all(|s| *s == 429), "{statuses:?}");
    // Even the right password is refused from there, saying when to retry.
    let refused = app.login_from(attacker, "aigerim", USER_PASSWORD);
    assert_eq!(refused.status, 429, "{}", refused.text);
    assert!(refused.header("retry-after").is_some());

    // The worker, from her own network, signs in; her phone keeps syncing.
    assert_eq!(app.login("aigerim", USER_PASSWORD).status, 201);
    assert_eq!(
        app.login_from("127.0.0.3", "aigerim", USER_PASSWORD).status,
        201
    );
    assert_eq!(app.get("/api/v1/sync", &device).status, 200);
}

#[test]
fn an_office_address_guessing_many_accounts_locks_nobody_out() {
    let app = TestApp::spawn_with(|s| {
        s.login.slow_after = 2;
        s.login.lock_after = 4;
        s.login.address_slow_after = 3;
    });
    let admin = app.admin_token();
    app.user(&admin, "colleague", "field_worker", &["KZ-CAM-ALA"]);

    // One machine behind the office NAT tries twelve accounts.
    let office = "127.0.0.4";
    for i in 0..12 {
        app.login_from(office, &format!("someone{i}"), "a wrong password")
            .assert_problem(401, "unauthorized");
    }
    // Everyone else behind that address still signs in (only slowed).
    let res = app.login_from(office, "colleague", USER_PASSWORD);
    assert_eq!(res.status, 201, "{}", res.text);
}

#[test]
fn a_hard_account_lock_is_an_admin_setting() {
    let app = TestApp::spawn_with(|s| {
        s.login.slow_after = 2;
        s.login.lock_after = 4;
        s.login.account_lock_after = 6;
    });
    let admin = app.admin_token();
    let (worker_id, _) = app.user(&admin, "dorji", "field_worker", &["BT-NCWC"]);
    let (_, device) = device_token(&app, &admin, &worker_id);
    for address in ["127.0.0.5", "127.0.0.6", "127.0.0.7"] {
        for _ in 0..2 {
            app.login_from(address, "dorji", "a wrong password")
                .assert_problem(401, "unauthorized");
        }
    }
    // Six failures from anywhere: the account's password is locked…
    app.login_from("127.0.0.8", "dorji", USER_PASSWORD)
        .assert_problem(429, "too_many_requests");
    // …and its device tokens keep working.
    assert_eq!(app.get("/api/v1/sync", &device).status, 200);
}

// ---- 4. Tokens carry no more than their maker may give ---------------------

#[test]
fn coordinators_make_tokens_only_for_their_own_staff_and_the_audit_names_them() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (coordinator_id, coordinator) =
        app.user(&admin, "manager.almaty", "coordinator", &["KZ-CAM-ALA"]);
    let (both_id, _) = app.user(
        &admin,
        "both.sites",
        "field_worker",
        &["KZ-CAM-ALA", "KZ-CAM-SHY"],
    );
    let (worker_id, worker_session) =
        app.user(&admin, "almaty.only", "field_worker", &["KZ-CAM-ALA"]);

    // A worker who also works at a site the coordinator does not run.
    let refused = app.post(
        "/api/v1/tokens",
        &coordinator,
        json!({ "user_id": both_id, "label": "phone" }),
    );
    refused.assert_problem(403, "forbidden");
    assert!(refused.body["detail"]
        .as_str()
        .unwrap()
        .contains("site you do not coordinate"));
    // An admin may.
    device_token(&app, &admin, &both_id);

    // No longer than the server's device_token_ttl_days (180 by default).
    let cap = app.settings.device_token_ttl_days;
    let long = app.post(
        "/api/v1/tokens",
        &coordinator,
        json!({ "user_id": worker_id, "label": "phone", "expires_in_days": 3650 }),
    );
    let problem = long.assert_problem(422, "validation");
    assert_eq!(long.error_pointers(), ["/expires_in_days"]);
    assert!(
        problem["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains(&cap.to_string()),
        "{}",
        long.text
    );

    // The token row names its maker, and so does every audit row made with it.
    let (token_id, device) = device_token(&app, &coordinator, &worker_id);
    let created_by: Option<String> = tokens::table
        .find(&token_id)
        .select(tokens::created_by)
        .first(&mut app.conn())
        .unwrap();
    assert_eq!(created_by.as_deref(), Some(coordinator_id.as_str()));
    let listed = app.get("/api/v1/cases", &device);
    assert_eq!(listed.status, 200, "{}", listed.text);
    let by_session = app.get("/api/v1/cases", &worker_session);
    assert_eq!(by_session.status, 200);
    let row_of = |res: &common::Response| -> (Option<String>, Option<String>) {
        audit_log::table
            .filter(audit_log::request_id.eq(res.header("x-request-id").unwrap()))
            .select((audit_log::actor_id, audit_log::token_created_by))
            .first(&mut app.conn())
            .unwrap()
    };
    assert_eq!(
        row_of(&listed),
        (Some(worker_id.clone()), Some(coordinator_id.clone()))
    );
    assert_eq!(row_of(&by_session), (Some(worker_id.clone()), None));
    // The chain covers the maker: it still verifies.
    let key = casesync::server::audit_key(&app.settings).unwrap();
    let verified = casesync::audit::verify(&mut app.conn(), key.as_ref(), None).unwrap();
    assert!(verified.problems.is_empty(), "{:?}", verified.problems);
}

// ---- 5. Site membership is the access boundary -----------------------------

fn initial_assessment(case_id: &str) -> Value {
    let mut ia = fixture("kz.initial_assessment");
    ia["admin"]["child_removed"] = json!(false);
    ia["admin"].as_object_mut().unwrap().remove("removal_at");
    form_envelope("kz.initial_assessment", case_id, ia)
}

#[test]
fn moving_a_worker_off_a_site_ends_their_access_to_its_cases_at_once() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (_, coordinator) = app.user(&admin, "manager", "coordinator", &["KZ-CAM-ALA"]);
    let (worker_id, worker) = app.user(&admin, "aigerim", "field_worker", &["KZ-CAM-ALA"]);
    let (other_id, _) = app.user(&admin, "bolat", "field_worker", &["KZ-CAM-ALA"]);
    let (_, device) = device_token(&app, &admin, &worker_id);
    let case_id = uuid::Uuid::new_v4().to_string();
    let res = phone(&app, &worker).send(&referral(&case_id).child("Dana Boundary").envelope());
    assert_eq!(res.status, 201, "{}", res.text);
    let case = format!("/api/v1/cases/{case_id}");
    assert_eq!(app.get(&case, &worker).status, 200);
    let synced = app.get("/api/v1/sync", &device);
    assert_eq!(synced.body["cases"][0]["id"], case_id.as_str());
    let cursor = synced.body["cursor"].as_str().unwrap().to_string();
    let listed = app.get("/api/v1/cases", &coordinator);
    assert_eq!(
        listed.body["items"][0]["needs_assignee"], false,
        "{}",
        listed.text
    );

    // Moved to Shymkent: nothing of Almaty's is hers any more, at once.
    let moved = app.patch(
        &format!("/api/v1/users/{worker_id}"),
        &admin,
        json!({ "site_ids": [app.site_id(&admin, "KZ-CAM-SHY")] }),
    );
    assert_eq!(moved.status, 200, "{}", moved.text);
    for token in [&worker, &device] {
        // No longer hers to see: answered as a case that does not exist.
        app.get(&case, token).assert_problem(404, "not_found");
        app.get(&format!("{case}/timeline"), token)
            .assert_problem(404, "not_found");
        let list = app.get("/api/v1/cases", token);
        assert_eq!(list.body["items"], json!([]), "{}", list.text);
        let full = app.get("/api/v1/sync", token);
        assert_eq!(full.body["cases"], json!([]), "{}", full.text);
        let res = phone(&app, token).send(&initial_assessment(&case_id));
        assert_eq!(res.status, 403, "{}", res.text);
    }
    // The phone that synced before hears to drop it.
    let after = app.get(&format!("/api/v1/sync?cursor={cursor}"), &device);
    assert_eq!(
        after.body["dropped_cases"],
        json!([case_id]),
        "{}",
        after.text
    );

    // The coordinator sees it needs a new assignee, and gives it one.
    let waiting = app.get("/api/v1/cases?needs_assignee=true", &coordinator);
    assert_eq!(waiting.status, 200, "{}", waiting.text);
    let items = waiting.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{}", waiting.text);
    assert_eq!(items[0]["id"], case_id.as_str());
    assert_eq!(items[0]["needs_assignee"], true);
    assert_eq!(items[0]["assigned_to"], worker_id.as_str());
    let res = app.post(
        &format!("{case}/assignment"),
        &coordinator,
        json!({ "assignee": other_id }),
    );
    assert_eq!(res.status, 200, "{}", res.text);
    let waiting = app.get("/api/v1/cases?needs_assignee=true", &coordinator);
    assert_eq!(waiting.body["items"], json!([]), "{}", waiting.text);
}

// ---- 6. Password changes end other sessions --------------------------------

#[test]
fn a_password_change_ends_every_other_session_and_devices_are_revoked_on_request() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (worker_id, first) = app.user(&admin, "saule", "field_worker", &["KZ-CAM-SHY"]);
    let second = app.token_for("saule", USER_PASSWORD);
    let (device_id, device) = device_token(&app, &admin, &worker_id);
    let (other_id, _) = app.user(&admin, "other", "field_worker", &["KZ-CAM-SHY"]);
    let (others_id, others_device) = device_token(&app, &admin, &other_id);

    // /me lists her device tokens, never their secrets.
    let me = app.get("/api/v1/me", &first);
    assert_eq!(
        me.body["device_tokens"][0]["id"],
        device_id.as_str(),
        "{}",
        me.text
    );
    assert!(!me.text.contains(&device) && !me.text.contains("token_hash"));

    let new_password = "steppe-wind-orchard-lantern";
    let changed = app.post(
        "/api/v1/me/password",
        &first,
        json!({ "current_password": USER_PASSWORD, "new_password": new_password }),
    );
    assert_eq!(changed.status, 200, "{}", changed.text);
    let fresh = changed.body["token"].as_str().unwrap().to_string();
    for old in [&first, &second] {
        app.get("/api/v1/me", old)
            .assert_problem(401, "unauthorized");
    }
    assert_eq!(app.get("/api/v1/me", &fresh).status, 200);
    assert_eq!(app.get("/api/v1/sync", &device).status, 200, "devices stay");

    // A lost phone: revoked on request; another's token is not hers to see.
    app.delete(&format!("/api/v1/me/tokens/{others_id}"), &fresh)
        .assert_problem(404, "not_found");
    assert_eq!(app.get("/api/v1/me", &others_device).status, 200);
    let revoked = app.delete(&format!("/api/v1/me/tokens/{device_id}"), &fresh);
    assert_eq!(revoked.status, 200, "{}", revoked.text);
    app.get("/api/v1/sync", &device)
        .assert_problem(401, "unauthorized");
}

#[test]
fn a_one_time_password_session_may_only_change_it_and_ends_with_the_change() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (worker_id, _) = app.user(&admin, "tashi", "field_worker", &["BT-NCWC"]);
    let reset = app.post(
        &format!("/api/v1/users/{worker_id}/password"),
        &admin,
        json!({}),
    );
    let one_time = reset.body["one_time_password"]
        .as_str()
        .unwrap()
        .to_string();
    let login = app.login("tashi", &one_time);
    assert_eq!(login.body["password_change_required"], true);
    let session = login.body["token"].as_str().unwrap().to_string();

    for path in [
        "/api/v1/cases",
        "/api/v1/sync",
        "/api/v1/sites",
        "/api/v1/forms",
    ] {
        app.get(path, &session)
            .assert_problem(403, "password_change_required");
    }

    let changed = app.post(
        "/api/v1/me/password",
        &session,
        json!({ "current_password": one_time, "new_password": "juniper-yak-river-prayer" }),
    );
    assert_eq!(changed.status, 200, "{}", changed.text);
    app.get("/api/v1/me", &session)
        .assert_problem(401, "unauthorized");
    let fresh = changed.body["token"].as_str().unwrap();
    assert_eq!(app.get("/api/v1/cases", fresh).status, 200);
}

// ---- 7. Weak passwords are refused -----------------------------------------

#[test]
fn weak_passwords_are_refused_everywhere_saying_why() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let site = app.site_id(&admin, "KZ-CAM-ALA");

    for weak in ["password12", "1234567890", "qwertyuiop"] {
        let res = app.post(
            "/api/v1/users",
            &admin,
            json!({ "username": "dana", "role": "field_worker", "site_ids": [site], "password": weak }),
        );
        let problem = res.assert_problem(422, "validation");
        assert_eq!(res.error_pointers(), ["/password"]);
        let why = problem["errors"][0]["message"].as_str().unwrap();
        assert!(why.starts_with("is too easy to guess."), "{weak}: {why}");
        assert!(why.contains("common password"), "{weak}: {why}");
    }
    // The username, the site's code and the server's name count as words an
    // attacker tries first.
    let res = app.post(
        "/api/v1/users",
        &admin,
        json!({ "username": "dana", "role": "field_worker", "site_ids": [site], "password": "danacasesync" }),
    );
    res.assert_problem(422, "validation");
    assert!(res.text.contains("contains \\\"dana\\\""), "{}", res.text);
    let res = app.post(
        "/api/v1/users",
        &admin,
        json!({ "username": "erlan", "role": "field_worker", "site_ids": [site], "password": "kzcamalacasesync" }),
    );
    res.assert_problem(422, "validation");

    // A password change and an admin's reset check the same way.
    let (user_id, session) = app.user(&admin, "dana", "field_worker", &["KZ-CAM-ALA"]);
    let res = app.post(
        "/api/v1/me/password",
        &session,
        json!({ "current_password": USER_PASSWORD, "new_password": "qwertyuiop" }),
    );
    res.assert_problem(422, "validation");
    assert_eq!(res.error_pointers(), ["/new_password"]);
    let res = app.post(
        &format!("/api/v1/users/{user_id}/password"),
        &admin,
        json!({ "password": "1234567890" }),
    );
    res.assert_problem(422, "validation");
    assert_eq!(res.error_pointers(), ["/password"]);
    assert_eq!(
        app.login("dana", USER_PASSWORD).status,
        201,
        "nothing changed"
    );

    // The server's own one-time passwords pass, and a strong choice does.
    let reset = app.post(
        &format!("/api/v1/users/{user_id}/password"),
        &admin,
        json!({}),
    );
    let one_time = reset.body["one_time_password"]
        .as_str()
        .unwrap()
        .to_string();
    let session = app.token_for("dana", &one_time);
    let changed = app.post(
        "/api/v1/me/password",
        &session,
        json!({ "current_password": one_time, "new_password": "amber-falcon-quilt-harbour" }),
    );
    assert_eq!(changed.status, 200, "{}", changed.text);

    // The command line refuses them too.
    let mut child = app
        .shell()
        .args(["users", "set-password", "dana"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"password12\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("too easy to guess"), "{said}");
    assert_eq!(
        app.login("dana", "amber-falcon-quilt-harbour").status,
        201,
        "nothing changed"
    );
}
