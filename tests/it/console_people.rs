//! The console's people and devices pages (`/people`, docs/console.md)
//! over real HTTP: each role sees from them what `GET /users` and
//! `GET /tokens` give it; a coordinator makes a Collect token for a field
//! worker of their site and sees its QR code, never for a worker who also
//! works elsewhere; revoking stops the token over the API; admins create
//! users, change them and reset passwords, with the API's refusals and
//! audit rows; a form without its CSRF value changes nothing. (The journey
//! in Chromium is tests/it/browser_people.rs.)

use std::collections::BTreeSet;

use crate::collect_qr::{inflate, png_of, read_qr};
use crate::common;
use crate::console::Browser;

use common::{Response, TestApp, USER_PASSWORD};
use serde_json::Value;

/// The usernames linked from a people page.
fn people_on(page: &Response) -> BTreeSet<String> {
    page.text
        .split("<a href=\"/people/")
        .skip(1)
        .map(|rest| {
            let after = rest.split_once("\">").unwrap().1;
            after.split('<').next().unwrap().to_string()
        })
        .collect()
}

fn usernames(api: &Response) -> BTreeSet<String> {
    api.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap().to_string())
        .collect()
}

fn device_tokens_of(app: &TestApp, admin: &str, user_id: &str) -> Vec<Value> {
    let res = app.get("/api/v1/tokens", admin);
    assert_eq!(res.status, 200, "{}", res.text);
    res.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["user_id"] == user_id)
        .cloned()
        .collect()
}

/// The text between `from` and the next `to` in a page.
fn between<'p>(text: &'p str, from: &str, to: &str) -> &'p str {
    let start = text
        .find(from)
        .unwrap_or_else(|| panic!("no {from} in\n{text}"))
        + from.len();
    let rest = &text[start..];
    &rest[..rest.find(to).unwrap_or(rest.len())]
}

#[test]
fn each_role_sees_the_people_and_tokens_the_api_gives_it() {
    let app = TestApp::spawn();
    let staff = app.staff().other_worker().elsewhere().analyst().build();
    let admin = &staff.admin;
    // A worker of Almaty and Shymkent, and one of Shymkent only.
    let (dana, _) = app.user(admin, "dana", "field_worker", &["KZ-CAM-ALA", "KZ-CAM-SHY"]);
    let (yerlan, _) = app.user(admin, "yerlan", "field_worker", &["KZ-CAM-SHY"]);
    let aigerim = app.get("/api/v1/me", &staff.worker).body["id"]
        .as_str()
        .unwrap()
        .to_string();

    // The list is the API's list, for the admin and for a coordinator.
    for token in [admin, &staff.coordinator, &staff.elsewhere] {
        let mut browser = Browser::with_session(&app, token);
        let page = browser.get("/people");
        assert_eq!(page.status, 200, "{}", page.text);
        assert_eq!(
            people_on(&page),
            usernames(&app.get("/api/v1/users", token))
        );
        assert!(page.text.contains("<a href=\"/people\">People</a>"));
    }
    let mut manager = Browser::with_session(&app, &staff.coordinator);
    let list = manager.get("/people");
    assert!(people_on(&list).contains("dana"));
    assert!(!people_on(&list).contains("yerlan"));
    assert!(
        !list.text.contains("action=\"/people\""),
        "only admins add people"
    );
    assert!(
        !list.text.contains("href=\"/audit\""),
        "the audit log is the admin's"
    );

    // A worker of the coordinator's site only: the Collect form.
    let page = manager.get(&format!("/people/{aigerim}"));
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page
        .text
        .contains(&format!("action=\"/people/{aigerim}/tokens\"")));
    assert!(
        !page.text.contains(&format!("action=\"/people/{aigerim}\""))
            && !page
                .text
                .contains(&format!("action=\"/people/{aigerim}/password\"")),
        "no admin forms for a coordinator"
    );

    // A worker who also works at a site not theirs: seen (as the API
    // shows them) but no token may be made, by the form or by a forged
    // POST; the API's reason is on the page.
    assert_eq!(
        app.get(&format!("/api/v1/users/{dana}"), &staff.coordinator)
            .status,
        200
    );
    let page = manager.get(&format!("/people/{dana}"));
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(!page.text.contains(&format!("/people/{dana}/tokens")));
    assert!(
        page.text
            .contains("also works at a site you do not coordinate"),
        "{}",
        page.text
    );
    let csrf = Browser::hidden(&page, "csrf");
    let made_before = app.audit_count("device_token_created");
    let forged = manager.post(
        &format!("/people/{dana}/tokens"),
        &[("csrf", &csrf), ("label", "phone")],
    );
    assert_eq!(forged.status, 403, "{}", forged.text);
    assert!(forged
        .text
        .contains("also works at a site you do not coordinate"));
    assert!(!forged.text.contains("collect-qr"));
    assert_eq!(app.audit_count("device_token_created"), made_before);
    assert!(device_tokens_of(&app, admin, &dana).is_empty());

    // A worker of another site only: not there at all, as from the API.
    assert_eq!(
        app.get(&format!("/api/v1/users/{yerlan}"), &staff.coordinator)
            .status,
        404
    );
    // Refused as the API refuses: a hidden refusal is on record.
    let refusals = app.audit_count("access_refused");
    assert_eq!(manager.get(&format!("/people/{yerlan}")).status, 404);
    assert_eq!(app.audit_count("access_refused"), refusals + 1);
    assert_eq!(
        manager.get("/people/no-such-person").status,
        404,
        "a missing person is not a refusal"
    );
    assert_eq!(app.audit_count("access_refused"), refusals + 1);
    let forged = manager.post(
        &format!("/people/{yerlan}/tokens"),
        &[("csrf", &csrf), ("label", "phone")],
    );
    assert_ne!(forged.status, 201);
    assert!(device_tokens_of(&app, admin, &yerlan).is_empty());

    // The admin may make dana's token (all sites are theirs).
    let mut root = Browser::with_session(&app, admin);
    let page = root.get(&format!("/people/{dana}"));
    assert!(page.text.contains(&format!("/people/{dana}/tokens")));
    assert!(page.text.contains("<a href=\"/audit\">Audit</a>"));

    // Roles the API refuses users to: the page is 403, no header link.
    for token in [&staff.worker, &staff.analyst] {
        let mut browser = Browser::with_session(&app, token);
        assert_eq!(app.get("/api/v1/users", token).status, 403);
        assert_eq!(browser.get("/people").status, 403);
        assert_eq!(browser.get(&format!("/people/{aigerim}")).status, 403);
        let today = browser.get("/today");
        assert!(!today.text.contains("href=\"/people\""));
        assert!(!today.text.contains("href=\"/audit\""));
    }
}

#[test]
fn a_coordinator_makes_a_collect_token_sees_its_qr_code_and_revokes_it() {
    let app = TestApp::spawn();
    let staff = app.staff().build();
    let aigerim = app.get("/api/v1/me", &staff.worker).body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut manager = Browser::with_session(&app, &staff.coordinator);
    let page = manager.get(&format!("/people/{aigerim}"));
    let csrf = Browser::hidden(&page, "csrf");
    let path = format!("/people/{aigerim}/tokens");

    // Without the form's CSRF value: refused, nothing made.
    let forged = manager.post(&path, &[("label", "Samsung A14")]);
    assert_eq!(forged.status, 403);
    let forged = manager.post(&path, &[("csrf", "0000"), ("label", "Samsung A14")]);
    assert_eq!(forged.status, 403);
    assert!(device_tokens_of(&app, &staff.admin, &aigerim).is_empty());

    // Over the lifetime cap: the API's reason, nothing made.
    let long = manager.post(
        &path,
        &[
            ("csrf", &csrf),
            ("label", "Samsung A14"),
            ("expires_in_days", "100000"),
        ],
    );
    assert_eq!(long.status, 422, "{}", long.text);
    assert!(long.text.contains("device_token_ttl_days"), "{}", long.text);
    assert!(device_tokens_of(&app, &staff.admin, &aigerim).is_empty());

    let before = app.audit_count("device_token_created");
    let made = manager.post(
        &path,
        &[
            ("csrf", &csrf),
            ("label", "Samsung A14"),
            ("expires_in_days", "30"),
        ],
    );
    assert_eq!(made.status, 201, "{}", made.text);
    assert_eq!(made.header("cache-control"), Some("no-store"));
    assert_eq!(app.audit_count("device_token_created"), before + 1);
    assert!(app
        .last_audit_detail("device_token_created")
        .contains("(ODK Collect, kz)"));

    // The QR code (a data: URL the CSP allows) and its text, which is
    // Collect's settings with a working device token of the worker.
    let src = between(&made.text, "id=\"collect-qr\" src=\"", "\"");
    let settings = between(
        &made.text,
        "id=\"collect-settings\" readonly rows=\"4\">",
        "<",
    );
    assert_eq!(read_qr(&png_of(src)), settings);
    let json = inflate(settings);
    assert_eq!(json["general"]["username"], "aigerim");
    assert_eq!(
        json["general"]["server_url"],
        "https://casesync.test/odk/kz"
    );
    let secret = json["general"]["password"].as_str().unwrap().to_string();
    assert_eq!(app.get("/api/v1/me", &secret).status, 200);

    // Listed on the person's page (never its secret), made by the
    // coordinator, revocable.
    let tokens = device_tokens_of(&app, &staff.admin, &aigerim);
    assert_eq!(tokens.len(), 1);
    let token_id = tokens[0]["id"].as_str().unwrap().to_string();
    let page = manager.get(&format!("/people/{aigerim}"));
    assert!(!page.text.contains(&secret));
    assert!(!page.text.contains("collect-qr"), "the code is shown once");
    let row = between(&page.text, &format!("data-token=\"{token_id}\""), "</tr>");
    assert!(row.contains("Samsung A14"), "{row}");
    assert!(row.contains("manager"), "{row}");
    assert!(row.contains("working"), "{row}");
    assert!(row.contains(&format!("action=\"/tokens/{token_id}/revoke\"")));

    // Revoking without the CSRF value: refused, the token still works.
    let revoke = format!("/tokens/{token_id}/revoke");
    assert_eq!(manager.post(&revoke, &[]).status, 403);
    assert_eq!(app.get("/api/v1/me", &secret).status, 200);

    let revoked_before = app.audit_count("token_revoked");
    let done = manager.post(&revoke, &[("csrf", &csrf)]);
    assert_eq!(done.status, 303, "{}", done.text);
    assert_eq!(
        done.header("location"),
        Some(format!("/people/{aigerim}?done=revoked").as_str())
    );
    assert_eq!(app.audit_count("token_revoked"), revoked_before + 1);
    assert_eq!(app.get("/api/v1/me", &secret).status, 401);
    let page = manager.get(&format!("/people/{aigerim}?done=revoked"));
    assert!(page.text.contains("The token is revoked"));
    let row = between(&page.text, &format!("data-token=\"{token_id}\""), "</tr>");
    assert!(
        row.contains("revoked") && !row.contains("/revoke\""),
        "{row}"
    );
}

#[test]
fn a_coordinator_of_another_site_may_not_revoke_a_token() {
    let app = TestApp::spawn();
    let staff = app.staff().elsewhere().build();
    let aigerim = app.get("/api/v1/me", &staff.worker).body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let made = app.post(
        "/api/v1/tokens/collect-settings",
        &staff.coordinator,
        serde_json::json!({ "user_id": aigerim, "label": "phone" }),
    );
    assert_eq!(made.status, 201, "{}", made.text);
    let token_id = made.body["id"].as_str().unwrap();
    let secret = made.body["token"].as_str().unwrap();
    let mut shymkent = Browser::with_session(&app, &staff.elsewhere);
    let page = shymkent.get("/people");
    let csrf = Browser::hidden(&page, "csrf");
    let refused = shymkent.post(&format!("/tokens/{token_id}/revoke"), &[("csrf", &csrf)]);
    assert_eq!(refused.status, 403, "{}", refused.text);
    assert_eq!(app.get("/api/v1/me", secret).status, 200);
}

#[test]
fn an_admin_adds_a_person_changes_their_sites_and_resets_the_password() {
    let app = TestApp::spawn();
    let staff = app.staff().build();
    let admin = &staff.admin;
    let ala = app.site_id(admin, "KZ-CAM-ALA");
    let shy = app.site_id(admin, "KZ-CAM-SHY");
    let mut root = Browser::with_session(&app, admin);
    let page = root.get("/people");
    assert!(page.text.contains("action=\"/people\""));
    let csrf = Browser::hidden(&page, "csrf");

    // A weak password: the API's reason, nobody made, the form kept.
    let created_before = app.audit_count("user_created");
    let weak = root.post(
        "/people",
        &[
            ("csrf", &csrf),
            ("username", "saule"),
            ("display_name", "Saule"),
            ("role", "field_worker"),
            ("site", &ala),
            ("password", "password12"),
        ],
    );
    assert_eq!(weak.status, 422, "{}", weak.text);
    assert!(
        weak.text.contains("Password: is too easy to guess"),
        "{}",
        weak.text
    );
    assert!(weak.text.contains("value=\"saule\""));
    assert_eq!(app.audit_count("user_created"), created_before);
    assert!(!usernames(&app.get("/api/v1/users", admin)).contains("saule"));

    // Without the CSRF value: refused.
    let forged = root.post(
        "/people",
        &[
            ("username", "saule"),
            ("role", "field_worker"),
            ("site", &ala),
        ],
    );
    assert_eq!(forged.status, 403);

    // No password given: a one-time password, shown once, that signs in.
    let made = root.post(
        "/people",
        &[
            ("csrf", &csrf),
            ("username", "saule"),
            ("display_name", "Saule"),
            ("role", "field_worker"),
            ("site", &ala),
            ("password", ""),
        ],
    );
    assert_eq!(made.status, 201, "{}", made.text);
    assert_eq!(made.header("cache-control"), Some("no-store"));
    assert_eq!(app.audit_count("user_created"), created_before + 1);
    let one_time = between(&made.text, "<code id=\"one-time-password\">", "<").to_string();
    let login = app.login("saule", &one_time);
    assert_eq!(login.status, 201, "{}", login.text);
    assert_eq!(login.body["password_change_required"], true);
    let saule = app.get("/api/v1/users", admin).body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "saule")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Sites changed: the API's user changes, audited naming only that.
    let changed = root.post(
        &format!("/people/{saule}"),
        &[
            ("csrf", &csrf),
            ("display_name", "Saule"),
            ("role", "field_worker"),
            ("site", &ala),
            ("site", &shy),
            ("active", "on"),
        ],
    );
    assert_eq!(changed.status, 303, "{}", changed.text);
    assert_eq!(app.last_audit_detail("user_updated"), "site_ids");
    let user = app.get(&format!("/api/v1/users/{saule}"), admin).body;
    let mut want = vec![ala.clone(), shy.clone()];
    want.sort();
    assert_eq!(user["site_ids"], serde_json::json!(want));
    // Initials for BT case codes (SOP §10.2, #20 item 12): the API's
    // refusal in the field's words, then set, then cleared again.
    let initials = |root: &mut Browser, value: &str| {
        root.post(
            &format!("/people/{saule}"),
            &[
                ("csrf", &csrf),
                ("display_name", "Saule"),
                ("initials", value),
                ("role", "field_worker"),
                ("site", &ala),
                ("site", &shy),
                ("active", "on"),
            ],
        )
    };
    let bad = initials(&mut root, "s1");
    assert_eq!(bad.status, 422, "{}", bad.text);
    assert!(bad.text.contains("Initials in case codes"), "{}", bad.text);
    assert_eq!(initials(&mut root, "SA").status, 303);
    assert_eq!(app.last_audit_detail("user_updated"), "initials");
    let user = app.get(&format!("/api/v1/users/{saule}"), admin).body;
    assert_eq!(user["initials"], "SA");
    assert!(root
        .get(&format!("/people/{saule}"))
        .text
        .contains("value=\"SA\""));
    assert_eq!(initials(&mut root, "").status, 303);
    assert!(app.get(&format!("/api/v1/users/{saule}"), admin).body["initials"].is_null());
    // A field worker needs a site: the API's refusal, nothing changed.
    let updates = app.audit_count("user_updated");
    let no_site = root.post(
        &format!("/people/{saule}"),
        &[
            ("csrf", &csrf),
            ("display_name", "Saule"),
            ("role", "field_worker"),
            ("active", "on"),
        ],
    );
    assert_eq!(no_site.status, 422, "{}", no_site.text);
    assert!(no_site.text.contains("must work at one site or more"));
    assert_eq!(app.audit_count("user_updated"), updates);

    // Reset: a weak chosen one is refused with why; a blank one gives a
    // one-time password, shown once; the old sessions end.
    let session = app.token_for("saule", &one_time);
    let resets = app.audit_count("password_reset");
    let weak = root.post(
        &format!("/people/{saule}/password"),
        &[("csrf", &csrf), ("password", "saule12345")],
    );
    assert_eq!(weak.status, 422, "{}", weak.text);
    assert!(weak.text.contains("Password:"), "{}", weak.text);
    assert_eq!(app.audit_count("password_reset"), resets);
    let reset = root.post(
        &format!("/people/{saule}/password"),
        &[("csrf", &csrf), ("password", "")],
    );
    assert_eq!(reset.status, 200, "{}", reset.text);
    assert_eq!(app.audit_count("password_reset"), resets + 1);
    let fresh = between(&reset.text, "<code id=\"one-time-password\">", "<");
    assert_ne!(fresh, one_time);
    assert_eq!(app.login("saule", fresh).status, 201);
    assert_eq!(app.get("/api/v1/me", &session).status, 401);

    // A coordinator may do none of it (the API's 403), forms or not.
    let mut manager = Browser::with_session(&app, &staff.coordinator);
    let page = manager.get(&format!("/people/{saule}"));
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(!page
        .text
        .contains(&format!("action=\"/people/{saule}/password\"")));
    let csrf = Browser::hidden(&page, "csrf");
    let creates = app.audit_count("user_created");
    let refused = manager.post(
        "/people",
        &[
            ("csrf", &csrf),
            ("username", "intruder"),
            ("role", "field_worker"),
            ("site", &ala),
            ("password", USER_PASSWORD),
        ],
    );
    assert_eq!(refused.status, 403, "{}", refused.text);
    assert_eq!(app.audit_count("user_created"), creates);
    let refused = manager.post(
        &format!("/people/{saule}/password"),
        &[("csrf", &csrf), ("password", "")],
    );
    assert_eq!(refused.status, 403, "{}", refused.text);
    assert!(!refused.text.contains("one-time-password\">"));
    let refused = manager.post(
        &format!("/people/{saule}"),
        &[("csrf", &csrf), ("role", "coordinator"), ("site", &ala)],
    );
    assert_eq!(refused.status, 403, "{}", refused.text);
    assert_eq!(
        app.get(&format!("/api/v1/users/{saule}"), admin).body["role"],
        "field_worker"
    );
}

#[test]
fn without_a_public_url_the_page_says_why_no_code_is_made() {
    let app = TestApp::spawn_with(|s| s.public_url = None);
    let staff = app.staff().build();
    let aigerim = app.get("/api/v1/me", &staff.worker).body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut manager = Browser::with_session(&app, &staff.coordinator);
    let page = manager.get(&format!("/people/{aigerim}"));
    let csrf = Browser::hidden(&page, "csrf");
    let refused = manager.post(
        &format!("/people/{aigerim}/tokens"),
        &[("csrf", &csrf), ("label", "phone")],
    );
    assert_eq!(refused.status, 409, "{}", refused.text);
    assert!(
        refused.text.contains("an admin sets public_url"),
        "{}",
        refused.text
    );
    assert!(device_tokens_of(&app, &staff.admin, &aigerim).is_empty());
}
