//! The indicators page in a real headless Chromium (the harness of
//! tests/it/browser.rs): a coordinator opens it from the header, chooses a
//! period, the site and a breakdown with the mouse and keyboard, and reads
//! the table and the charts; screenshots at 1280×800 and 800×1280.

use crate::browser::Browser;
use crate::common;
use crate::console_indicators::november_referrals;

use common::{TestApp, USER_PASSWORD};
use fantoccini::Locator;

#[test]
fn a_coordinator_chooses_a_period_and_a_breakdown_and_reads_the_table_and_charts() {
    let app = TestApp::spawn();
    let staff = november_referrals(&app);
    let today = chrono::Utc::now().date_naive();
    let api = app.get(
        &format!(
            "/api/v1/indicators/kz?from=2026-01-01&to={today}&period=month&by=sex&site=KZ-CAM-ALA"
        ),
        &staff.coordinator,
    );
    assert_eq!(api.status, 200, "{}", api.text);
    let Some(browser) = Browser::open(&app) else {
        return;
    };
    browser.sign_in("manager", USER_PASSWORD);
    assert_eq!(browser.arrives_at("/today"), "/today");
    browser.click("nav a[href='/indicators']");
    assert_eq!(browser.arrives_at("/indicators"), "/indicators");

    // The form starts at this year so far, by month: November is in it.
    browser.runtime.block_on(async {
        let c = browser.client();
        let pick = |css: &'static str, label: &'static str| async move {
            c.find(Locator::Css(css))
                .await
                .unwrap()
                .select_by_value(label)
                .await
                .unwrap();
        };
        pick("#period", "month").await;
        pick("#site", "KZ-CAM-ALA").await;
    });
    browser.click("input[name=by][value=sex]");
    browser.click("form.filters button[type=submit]");
    assert_eq!(browser.arrives_at("/indicators"), "/indicators");

    let table = browser.text("table.indicators");
    assert!(table.contains("2026-11"), "{table}");
    assert!(table.contains("female"), "{table}");
    // The girls' count in November is the API's.
    let girls = api.body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["period"] == "2026-11" && r["by"]["sex"] == "female" && r["cases"] == 6)
        .expect("six girls in November");
    let indicator = girls["indicator"].as_str().unwrap();
    let rows = browser.text("table.indicators tbody");
    let want = "2026-11 female 6";
    assert!(
        rows.lines()
            .any(|l| l.contains(want) && l.contains(girls["label"].as_str().unwrap())),
        "{indicator}: {want} not in\n{rows}"
    );
    let charts = browser.text("figure.chart figcaption");
    assert!(!charts.is_empty());
    let source = browser.source();
    assert!(source.contains("<svg"), "charts inline");
    assert!(!source.contains("Child 0"), "no child's name on the page");
    browser.screenshots("indicators");
    // The same page scrolled to its charts.
    let here = browser
        .runtime
        .block_on(browser.client().current_url())
        .unwrap();
    let query = here.query().unwrap_or_default().to_string();
    browser.goto(&format!("/indicators?{query}#charts"));
    assert!(
        browser.text("#charts figcaption").contains("female")
            || browser.source().contains("female")
    );
    browser.screenshots("indicators-charts");
}

#[test]
fn a_viewer_sees_only_suppressed_indicators() {
    let app = TestApp::spawn();
    let staff = november_referrals(&app);
    app.user(&staff.admin, "observer", "viewer", &[]);
    let Some(browser) = Browser::open(&app) else {
        return;
    };
    browser.sign_in("observer", USER_PASSWORD);
    assert_eq!(browser.arrives_at("/today"), "/today");
    browser.goto("/indicators");
    browser.runtime.block_on(async {
        browser
            .client()
            .find(Locator::Css("#programme"))
            .await
            .unwrap()
            .select_by_value("kz")
            .await
            .unwrap();
    });
    browser.click("input[name=by][value=sex]");
    browser.click("form.filters button[type=submit]");
    assert_eq!(browser.arrives_at("/indicators"), "/indicators");
    assert!(browser
        .text("#suppression-note")
        .contains("Small counts are suppressed"));
    let rows = browser.text("table.indicators tbody");
    // The one boy of November: the mark, never his count.
    let boy = rows
        .lines()
        .find(|l| l.contains("2026-11 male"))
        .unwrap_or_else(|| panic!("no November boys' row in\n{rows}"));
    assert!(boy.contains("<5") && boy.contains("suppressed"), "{boy}");
    assert!(!boy.contains(" 1 "), "{boy}");
    browser.screenshots("indicators-viewer");
    let here = browser
        .runtime
        .block_on(browser.client().current_url())
        .unwrap();
    let query = here.query().unwrap_or_default().to_string();
    browser.goto(&format!("/indicators?{query}#charts"));
    assert!(browser.text("#charts figcaption").contains("cases"));
    browser.screenshots("indicators-viewer-charts");
}
