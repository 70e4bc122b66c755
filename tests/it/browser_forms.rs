//! The forms pages in a real headless Chromium (the harness of
//! tests/it/browser.rs): an admin opens *Forms* from the header, uploads a
//! draft file that has a problem and reads where it is, uploads a correct
//! one, publishes it and reads the diff against the version before;
//! screenshots at 1280×800 and 800×1280.

use crate::browser::Browser;
use crate::common;
use crate::console_forms::retitled;

use common::{TestApp, ADMIN_PASSWORD};
use fantoccini::Locator;
use serde_json::json;

/// Chooses `path` in the file input `css` (WebDriver sends the path as
/// keys; Chromium reads the file).
fn choose_file(browser: &Browser, css: &str, path: &std::path::Path) {
    browser.runtime.block_on(async {
        browser
            .client()
            .find(Locator::Css(css))
            .await
            .unwrap()
            .send_keys(&path.display().to_string())
            .await
            .unwrap();
    });
}

#[test]
fn an_admin_uploads_a_draft_publishes_it_and_reads_the_diff() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let Some(browser) = Browser::open(&app) else {
        return;
    };
    let dir = common::private_tempdir();
    browser.sign_in("admin", ADMIN_PASSWORD);
    assert_eq!(browser.arrives_at("/today"), "/today");
    browser.click("nav a[href='/forms']");
    assert_eq!(browser.arrives_at("/forms"), "/forms");
    let list = browser.text("table.forms");
    assert!(
        list.contains("kz.referral") && list.contains("2021.1.1"),
        "{list}"
    );
    browser.screenshots("forms");

    browser.click("a[href='/forms/kz.referral']");
    assert_eq!(
        browser.arrives_at("/forms/kz.referral"),
        "/forms/kz.referral"
    );
    browser.screenshots("form");

    // A draft with a problem: an array of items with no maxItems.
    let mut bad = retitled("2026.3", "Referral (2026)");
    bad["properties"]["child"]["properties"]["siblings"] = json!({
        "title": "Siblings", "type": "array",
        "items": {"type": "object", "properties": {"name": {"type": "string"}}}
    });
    let bad_file = dir.path().join("referral-bad.json");
    std::fs::write(&bad_file, serde_json::to_string_pretty(&bad).unwrap()).unwrap();
    choose_file(&browser, "#file", &bad_file);
    browser.click("form.upload button[type=submit]");
    assert_eq!(browser.arrives_at("/forms/drafts"), "/forms/drafts");
    let problems = browser.text("table.problems");
    assert!(
        problems.contains("field child › siblings") && problems.contains("maxItems"),
        "{problems}"
    );
    browser.screenshots("forms-upload-refused");
    assert_eq!(
        app.get("/api/v1/forms/kz.referral/draft", &admin).status,
        404,
        "nothing stored"
    );

    // The corrected file, from the refusal page's own form.
    let good_file = dir.path().join("referral.json");
    let mut good = retitled("2026.3", "Referral (2026)");
    let category = &mut good["properties"]["referrer"]["properties"]["referrer_category"];
    category["title"] = json!("Who referred the child");
    category["x-labels"] = json!({"ru": "Кто направил ребёнка"});
    std::fs::write(&good_file, serde_json::to_string_pretty(&good).unwrap()).unwrap();
    choose_file(&browser, "#file", &good_file);
    browser.click("form.upload button[type=submit]");
    assert_eq!(
        browser.arrives_at("/forms/kz.referral"),
        "/forms/kz.referral"
    );
    assert!(browser.text("p.done").contains("2026.3"));
    browser.click("form.publish button[type=submit]");
    assert_eq!(
        browser.arrives_at("/forms/kz.referral"),
        "/forms/kz.referral"
    );
    assert!(browser.text("p.done").contains("Published version 2026.3"));

    // The diff against the version before: the title, before and after.
    let diff = browser.text("table.diff");
    assert!(diff.contains("2021.1.1 → 2026.3"), "{diff}");
    let old_title = crate::console_forms::referral_source()["title"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        diff.lines().any(|l| l.contains("title")
            && l.contains(&old_title)
            && l.contains("Referral (2026)")),
        "{diff}"
    );
    assert!(
        diff.lines()
            .any(|l| l.contains("referrer/referrer_category")
                && l.contains("labels in other languages")
                && l.contains("Кто направил ребёнка")),
        "{diff}"
    );
    let versions = browser.text("table.versions");
    assert!(
        versions.contains("2026.3") && versions.contains("current"),
        "{versions}"
    );
    browser.screenshots("form-published");
    browser.goto("/forms/kz.referral?from=2021.1.1&to=2026.3#diff");
    browser.screenshots("forms-diff");
    let current = app.get("/api/v1/forms/kz.referral", &admin);
    assert_eq!(current.header("x-form-version"), Some("2026.3"));
}
