//! The console's forms pages (`/forms`, docs/console.md) over real HTTP:
//! admins only (every other role the 403 page, changing nothing); a draft
//! with problems is shown them with their places and nothing is stored;
//! uploading, publishing and retiring do what the API does, audited as it
//! audits them; the diff shows a title change; a form without the CSRF
//! value is refused. (The journey in Chromium is tests/it/browser_forms.rs.)

use std::path::Path;

use crate::common;
use crate::console::Browser;

use casesync::db::schema::{audit_log, form_drafts};
use common::TestApp;
use diesel::prelude::*;
use serde_json::{json, Value};

pub(crate) fn referral_source() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("form-definitions/kz/referral.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The shipped referral as a new version with a new title.
pub(crate) fn retitled(version: &str, title: &str) -> Value {
    let mut draft = referral_source();
    draft["x-form"]["version"] = json!(version);
    draft["title"] = json!(title);
    draft
}

fn drafts(app: &TestApp) -> i64 {
    form_drafts::table
        .count()
        .get_result(&mut app.conn())
        .unwrap()
}

/// What the API says the referral's current version is.
fn current_version(app: &TestApp, token: &str) -> String {
    let res = app.get("/api/v1/forms/kz.referral", token);
    assert_eq!(res.status, 200, "{}", res.text);
    res.header("x-form-version").unwrap().to_string()
}

/// The CSRF value of the browser's session, from a page that has one.
fn csrf(browser: &mut Browser, page: &str) -> String {
    let res = browser.get(page);
    assert_eq!(res.status, 200, "{}", res.text);
    Browser::hidden(&res, "csrf")
}

fn upload(browser: &mut Browser, csrf: &str, form: &str, draft: &Value) -> common::Response {
    let text = serde_json::to_string_pretty(draft).unwrap();
    browser.post_multipart(
        "/forms/drafts",
        &[
            ("csrf", "", csrf),
            ("form", "", form),
            ("file", "referral.json", &text),
            ("schema", "", ""),
        ],
    )
}

#[test]
fn only_admins_get_the_forms_pages_and_others_change_nothing() {
    let app = TestApp::spawn();
    let staff = app.staff().analyst().build();
    let (_, viewer) = app.user(&staff.admin, "observer", "viewer", &[]);

    let mut admin = Browser::with_session(&app, &staff.admin);
    let list = admin.get("/forms");
    assert_eq!(list.status, 200, "{}", list.text);
    assert!(
        list.text.contains("<a href=\"/forms\">Forms</a>"),
        "nav link"
    );
    assert!(list.text.contains("<a href=\"/forms/kz.referral\">"));
    assert!(list.text.contains("<a href=\"/forms/bt.referral\">"));
    assert!(list.text.contains("2021.1.1"));
    let page = admin.get("/forms/kz.referral");
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page
        .text
        .contains("/forms/kz.referral/versions/2021.1.1/retire"));
    assert_eq!(admin.get("/forms/kz.nothing").status, 404);

    // Every other role: the 403 page for each page and each change, and
    // nothing changed; no link in the header.
    let draft = retitled("2026.9", "Referral (new)");
    assert_eq!(
        app.post(
            "/api/v1/forms/kz.referral/draft",
            &staff.admin,
            draft.clone()
        )
        .status,
        201
    );
    for token in [&staff.coordinator, &staff.worker, &staff.analyst, &viewer] {
        let mut browser = Browser::with_session(&app, token);
        let signed_in = browser.get("/password");
        assert_eq!(signed_in.status, 200, "{}", signed_in.text);
        assert!(
            !signed_in.text.contains("href=\"/forms\""),
            "{}",
            signed_in.text
        );
        let csrf = Browser::hidden(&signed_in, "csrf");
        for path in ["/forms", "/forms/kz.referral"] {
            let refused = browser.get(path);
            assert_eq!(refused.status, 403, "{path}: {}", refused.text);
            assert!(refused.text.contains("Your role may not see this page."));
        }
        let published = browser.post("/forms/kz.referral/publish", &[("csrf", &csrf)]);
        assert_eq!(published.status, 403, "{}", published.text);
        let retired = browser.post(
            "/forms/kz.referral/versions/2021.1.1/retire",
            &[("csrf", &csrf)],
        );
        assert_eq!(retired.status, 403, "{}", retired.text);
        let uploaded = upload(&mut browser, &csrf, "kz.referral", &draft);
        assert_eq!(uploaded.status, 403, "{}", uploaded.text);
    }
    assert_eq!(current_version(&app, &staff.admin), "2021.1.1");
    assert_eq!(app.audit_count("form_published"), 0);
    assert_eq!(app.audit_count("form_retired"), 0);
    assert_eq!(app.audit_count("form_draft_uploaded"), 1, "the API's only");
}

#[test]
fn an_invalid_draft_shows_each_problem_where_it_is_and_stores_nothing() {
    let app = TestApp::spawn();
    let admin_token = app.admin_token();
    let mut admin = Browser::with_session(&app, &admin_token);
    let csrf = csrf(&mut admin, "/forms/kz.referral");

    // The form checker: an array of items without maxItems, a bad $schema.
    let mut draft = retitled("2026.4", "Referral");
    draft["$schema"] = json!("http://json-schema.org/draft-07/schema#");
    draft["properties"]["child"]["properties"]["siblings"] = json!({
        "title": "Siblings", "type": "array",
        "items": {"type": "object", "properties": {"name": {"type": "string"}}}
    });
    let refused = upload(&mut admin, &csrf, "kz.referral", &draft);
    assert_eq!(refused.status, 422, "{}", refused.text);
    let page = &refused.text;
    assert!(page.contains("The draft was not saved"), "{page}");
    assert!(page.contains("Nothing was stored"), "{page}");
    // Each problem: the place in words, the pointer, what is wrong.
    assert!(
        page.contains(
            "<tr><td>field child › siblings<br><code>/properties/child/properties/siblings</code></td><td>an array must set &#34;maxItems&#34;"
        ),
        "{page}"
    );
    assert!(page.contains("<code>/$schema</code>"), "{page}");
    // The text comes back to be corrected.
    assert!(page.contains("&#34;siblings&#34;"), "{page}");

    // The XForm generator: a rule ODK Collect cannot ask.
    let mut draft = retitled("2026.4", "Referral");
    draft["properties"]["child"]["properties"]["child_age_claimed"] =
        json!({"title": "Age", "type": "integer", "minimum": 0, "multipleOf": 2});
    let refused = upload(&mut admin, &csrf, "kz.referral", &draft);
    assert_eq!(refused.status, 422, "{}", refused.text);
    assert!(refused.text.contains("ODK Collect"), "{}", refused.text);
    assert!(
        refused.text.contains(
            "field child › child_age_claimed, multipleOf<br><code>/properties/child/properties/child_age_claimed/multipleOf</code>"
        ),
        "{}",
        refused.text
    );

    // A form other than the page's, and text that is not JSON.
    let other = upload(&mut admin, &csrf, "kz.follow_up", &retitled("2026.4", "R"));
    assert_eq!(other.status, 422, "{}", other.text);
    assert!(
        other.text.contains("the form&#39;s settings (x-form), id"),
        "{}",
        other.text
    );
    let broken = admin.post_multipart(
        "/forms/drafts",
        &[("csrf", "", &csrf), ("schema", "", "{\"title\": \"x\",")],
    );
    assert_eq!(broken.status, 422, "{}", broken.text);
    assert!(
        broken.text.contains("The text is not JSON:"),
        "{}",
        broken.text
    );
    assert!(broken.text.contains("line 1"), "{}", broken.text);

    assert_eq!(drafts(&app), 0, "nothing stored");
    assert_eq!(app.audit_count("form_draft_uploaded"), 0);
    assert_eq!(current_version(&app, &admin_token), "2021.1.1");
    let page = admin.get("/forms/kz.referral");
    assert!(page.text.contains("This form has no draft."));
}

#[test]
fn an_admin_uploads_publishes_retires_and_the_diff_shows_the_title_change() {
    let app = TestApp::spawn();
    let admin_token = app.admin_token();
    let mut admin = Browser::with_session(&app, &admin_token);
    let csrf = csrf(&mut admin, "/forms");
    let old_title = referral_source()["title"].as_str().unwrap().to_string();

    // From the list: the form is the definition's x-form.id.
    let saved = upload(
        &mut admin,
        &csrf,
        "",
        &retitled("2026.3", "Referral (2026)"),
    );
    assert_eq!(saved.status, 303, "{}", saved.text);
    assert_eq!(
        saved.header("location"),
        Some("/forms/kz.referral?uploaded=2026.3")
    );
    assert_eq!(app.audit_count("form_draft_uploaded"), 1);
    let api_draft = app.get("/api/v1/forms/kz.referral/draft", &admin_token);
    assert_eq!(api_draft.status, 200);
    assert_eq!(api_draft.body["title"], "Referral (2026)");
    let page = admin.get("/forms/kz.referral?uploaded=2026.3");
    assert!(
        page.text.contains("Saved as the draft: 2026.3"),
        "{}",
        page.text
    );
    assert!(page.text.contains("Publish version 2026.3"));

    let published = admin.post("/forms/kz.referral/publish", &[("csrf", &csrf)]);
    assert_eq!(published.status, 303, "{}", published.text);
    let next = published.header("location").unwrap().to_string();
    assert_eq!(next, "/forms/kz.referral?published=2026.3");
    assert_eq!(app.audit_count("form_published"), 1);
    assert_eq!(current_version(&app, &admin_token), "2026.3");

    // The diff from the version before, as the API's: the title changed.
    let page = admin.get(&next);
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page.text.contains("Published version 2026.3"));
    assert!(
        page.text.contains("Changes from 2021.1.1 → 2026.3"),
        "{}",
        page.text
    );
    let row = format!(
        "<td><em>the form itself</em></td>\n  <td>title</td>\n  <td class=\"before\">{}</td>\n  <td class=\"after\">Referral (2026)</td>",
        old_title.replace('\'', "&#39;")
    );
    assert!(page.text.contains(&row), "{row}\nnot in\n{}", page.text);
    let api = app.get(
        "/api/v1/forms/kz.referral/versions/2021.1.1/diff/2026.3",
        &admin_token,
    );
    assert_eq!(api.body["title"], json!([old_title, "Referral (2026)"]));
    // Any two versions: the same one twice changes nothing.
    let same = admin.get("/forms/kz.referral?from=2026.3&to=2026.3");
    assert!(same
        .text
        .contains("Nothing a phone shows or checks changed"));

    // Publishing the same version string again: said on the page, 409.
    assert_eq!(
        upload(
            &mut admin,
            &csrf,
            "kz.referral",
            &retitled("2026.3", "Again")
        )
        .status,
        303
    );
    let again = admin.post("/forms/kz.referral/publish", &[("csrf", &csrf)]);
    assert_eq!(again.status, 409, "{}", again.text);
    assert!(again.text.contains("already published"), "{}", again.text);
    assert_eq!(app.audit_count("form_published"), 1);

    let retired = admin.post(
        "/forms/kz.referral/versions/2026.3/retire",
        &[("csrf", &csrf)],
    );
    assert_eq!(retired.status, 303, "{}", retired.text);
    assert_eq!(
        retired.header("location"),
        Some("/forms/kz.referral?retired=2026.3")
    );
    assert_eq!(app.audit_count("form_retired"), 1);
    assert_eq!(current_version(&app, &admin_token), "2021.1.1");
    let page = admin.get("/forms/kz.referral?retired=2026.3");
    assert!(page.text.contains("Retired version 2026.3"));
    assert!(
        page.text.contains("<td class=\"retired\">retired</td>"),
        "{}",
        page.text
    );
    // Audited as the API audits: the form and the version.
    let rows: Vec<(String, Option<String>, Option<String>)> = audit_log::table
        .filter(audit_log::action.like("form_%"))
        .select((audit_log::action, audit_log::object_id, audit_log::detail))
        .order(audit_log::id)
        .load(&mut app.conn())
        .unwrap();
    assert_eq!(
        rows,
        [
            ("form_draft_uploaded", "kz.referral", "2026.3"),
            ("form_published", "kz.referral", "2026.3"),
            ("form_draft_uploaded", "kz.referral", "2026.3"),
            ("form_retired", "kz.referral", "2026.3"),
        ]
        .map(|(a, o, d)| (a.to_string(), Some(o.to_string()), Some(d.to_string())))
    );
}

#[test]
fn a_form_without_the_csrf_value_is_refused_and_changes_nothing() {
    let app = TestApp::spawn();
    let admin_token = app.admin_token();
    let mut admin = Browser::with_session(&app, &admin_token);
    let draft = retitled("2026.7", "Forged");

    let forged = upload(&mut admin, "", "kz.referral", &draft);
    assert_eq!(forged.status, 403, "{}", forged.text);
    let forged = upload(
        &mut admin,
        "0123456789abcdef0123456789abcdef",
        "kz.referral",
        &draft,
    );
    assert_eq!(forged.status, 403, "{}", forged.text);
    assert_eq!(drafts(&app), 0);

    assert_eq!(
        app.post("/api/v1/forms/kz.referral/draft", &admin_token, draft)
            .status,
        201
    );
    let forged = admin.post("/forms/kz.referral/publish", &[("csrf", "")]);
    assert_eq!(forged.status, 403, "{}", forged.text);
    let forged = admin.post("/forms/kz.referral/versions/2021.1.1/retire", &[]);
    assert_eq!(forged.status, 403, "{}", forged.text);
    assert_eq!(current_version(&app, &admin_token), "2021.1.1");
    assert_eq!(drafts(&app), 1, "the API's draft, unpublished");
    assert_eq!(app.audit_count("form_published"), 0);
    assert_eq!(app.audit_count("form_retired"), 0);
}
