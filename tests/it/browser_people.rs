//! People and devices, and the audit log, in a real headless Chromium (the
//! harness of tests/it/browser.rs): a coordinator opens a field worker of
//! their site from the header, makes a device token for ODK Collect, sees
//! its QR code and revokes it; an admin opens the audit log from the
//! header, filters it and checks the chain. Screenshots at 1280×800 and
//! 800×1280.

use crate::browser::Browser;
use crate::collect_qr::inflate;
use crate::common;

use common::{TestApp, USER_PASSWORD};

#[test]
fn a_coordinator_makes_a_device_token_sees_the_qr_code_and_revokes_it() {
    let app = TestApp::spawn();
    let staff = app.staff().other_worker().build();
    let aigerim = app.get("/api/v1/me", &staff.worker).body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let Some(browser) = Browser::open(&app) else {
        return;
    };
    browser.sign_in("manager", USER_PASSWORD);
    assert_eq!(browser.arrives_at("/today"), "/today");
    browser.click("nav a[href='/people']");
    assert_eq!(browser.arrives_at("/people"), "/people");
    let people = browser.text("table.people");
    assert!(
        people.contains("aigerim") && people.contains("bolat"),
        "{people}"
    );
    browser.screenshots("people");

    browser.click(&format!("a[href='/people/{aigerim}']"));
    let person = format!("/people/{aigerim}");
    assert_eq!(browser.arrives_at(&person), person);
    browser.fill("#label", "Samsung A14, blue case");
    browser.fill("#expires_in_days", "90");
    browser.click("#new-token button[type=submit]");
    assert!(browser.text("#collect").contains("Set up the phone"));
    // The code is an image the page shows (a data: URL the CSP allows),
    // with its settings as text: Collect's, with a working token.
    // (WebDriver's script runs outside the page's CSP; the page has none.)
    let width = browser
        .runtime
        .block_on(browser.client().execute(
            "return document.getElementById('collect-qr').naturalWidth",
            vec![],
        ))
        .unwrap();
    assert!(
        width.as_u64().is_some_and(|w| w > 100),
        "the QR image loads: {width}"
    );
    let settings = browser.runtime.block_on(async {
        browser
            .client()
            .find(fantoccini::Locator::Css("#collect-settings"))
            .await
            .unwrap()
            .prop("value")
            .await
            .unwrap()
            .unwrap()
    });
    let secret = inflate(&settings)["general"]["password"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(app.get("/api/v1/me", &secret).status, 200);
    browser.screenshots("person-qr");

    // Back to the person: the token is listed, working; revoke it.
    browser.goto(&person);
    let row = browser.text("table.tokens tbody tr");
    assert!(
        row.contains("Samsung A14, blue case") && row.contains("working"),
        "{row}"
    );
    browser.click("table.tokens form button[type=submit]");
    assert!(browser
        .text("[role=status]")
        .contains("The token is revoked"));
    assert!(browser.text("table.tokens tbody tr").contains("revoked"));
    assert_eq!(app.get("/api/v1/me", &secret).status, 401);
    browser.screenshots("person-revoked");
}

#[test]
fn an_admin_filters_the_audit_log_and_checks_the_chain() {
    let app = TestApp::spawn();
    app.staff().build();
    let Some(browser) = Browser::open(&app) else {
        return;
    };
    // The staff builder changed the first admin's one-time password.
    browser.sign_in("admin", common::ADMIN_PASSWORD);
    assert_eq!(browser.arrives_at("/today"), "/today");
    browser.click("nav a[href='/audit']");
    assert_eq!(browser.arrives_at("/audit"), "/audit");
    browser.fill("#action", "user_created");
    browser.submit("form.filters button[type=submit]");
    assert_eq!(browser.arrives_at("/audit"), "/audit");
    let rows = browser.text("table.audit tbody");
    assert!(rows.contains("user_created"), "{rows}");
    assert!(
        rows.lines().all(|l| l.contains("user_created")),
        "only the action asked for:\n{rows}"
    );
    assert!(rows.contains("admin"), "who did it, by name: {rows}");
    browser.screenshots("audit");

    browser.click("#chain-link");
    assert_eq!(browser.arrives_at("/audit/chain"), "/audit/chain");
    assert!(browser
        .text("#chain-status")
        .contains("has not been checked"));
    // The check runs in the background (#18); the page shows it once done.
    browser.submit("#chain-start");
    assert_eq!(browser.arrives_at("/audit/chain"), "/audit/chain");
    for _ in 0..600 {
        if !browser.source().contains("id=\"chain-running\"") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        browser.goto("/audit/chain");
    }
    assert!(browser
        .text("#chain-status")
        .contains("The chain is intact"));
    browser.screenshots("audit-chain");

    // The admin's people pages: the new-user form, a person's forms.
    browser.click("nav a[href='/people']");
    assert_eq!(browser.arrives_at("/people"), "/people");
    assert!(browser.text("#new-user").contains("Add a person"));
    browser.screenshots("people-admin");
    browser.click("table.people a[href^='/people/']");
    assert!(browser.text("#change").contains("Role, sites and standing"));
    browser.screenshots("person-admin");
}
