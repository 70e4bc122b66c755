//! The console's indicators page (`/indicators`, docs/console.md) over
//! real HTTP: the numbers on the page are the API's JSON for the same
//! query, on cases made by real submissions; a viewer sees suppression
//! marks, never the small counts; the CSV link gives the API's CSV; one
//! audit row per report, as the API's. (The journey in Chromium is
//! tests/it/browser_indicators.rs.)

use crate::common;
use crate::console::Browser;

use casesync::db::schema::audit_log;
use common::build;
use common::phone::phone;
use common::TestApp;
use diesel::prelude::*;
use serde_json::Value;

/// Seven KZ referrals in November 2026 by real submissions: six girls, one
/// boy (one is a count below the suppression threshold of 5).
pub(crate) fn november_referrals(app: &TestApp) -> common::build::Staff {
    let staff = app.staff().analyst().build();
    for (i, sex) in [
        "female", "female", "female", "female", "female", "female", "male",
    ]
    .iter()
    .enumerate()
    {
        let referral = build::referral(&uuid::Uuid::new_v4().to_string())
            .received_at(&format!("2026-11-{:02}T10:00:00+05:00", i + 2))
            .child(&format!("Child {i}"))
            .sex(sex)
            .envelope();
        assert_eq!(phone(app, &staff.worker).send(&referral).status, 201);
    }
    staff
}

pub(crate) const QUERY: &str = "programme=kz&from=2026-11-01&to=2026-11-30&period=range&by=sex";

fn escape(text: &str) -> String {
    // As askama escapes.
    text.replace('&', "&#38;")
        .replace('<', "&#60;")
        .replace('>', "&#62;")
}

fn shown(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The table row the page must show for the API's `row`, up to its
/// suppression word.
fn expected_row(row: &Value) -> String {
    let mut html = format!(
        "<tr data-indicator=\"{}\"><th scope=\"row\">{}</th><td>{}</td><td>{}</td>",
        shown(&row["indicator"]),
        escape(&shown(&row["label"])),
        escape(&shown(&row["period"])),
        escape(&shown(&row["by"]["sex"])),
    );
    for name in ["cases", "children", "numerator", "denominator", "percent"] {
        let hidden = if row[name].is_string() {
            " class=\"suppressed\""
        } else {
            ""
        };
        html.push_str(&format!("<td{hidden}>{}</td>", escape(&shown(&row[name]))));
    }
    html
}

fn api_report(app: &TestApp, token: &str) -> Value {
    let res = app.get(
        "/api/v1/indicators/kz?from=2026-11-01&to=2026-11-30&period=range&by=sex",
        token,
    );
    assert_eq!(res.status, 200, "{}", res.text);
    res.body
}

fn report_audits(app: &TestApp) -> i64 {
    audit_log::table
        .filter(audit_log::action.eq("indicators_reported"))
        .count()
        .get_result(&mut app.conn())
        .unwrap()
}

#[test]
fn the_page_shows_the_apis_numbers_and_its_csv() {
    let app = TestApp::spawn();
    let staff = november_referrals(&app);
    let json = api_report(&app, &staff.coordinator);
    let rows = json["rows"].as_array().unwrap();
    let girls = rows
        .iter()
        .find(|r| r["by"]["sex"] == "female" && r["cases"] == 6)
        .expect("six girls referred, counted by the API");
    assert_eq!(girls["suppression"], Value::Null);

    let mut browser = Browser::with_session(&app, &staff.coordinator);
    let before = report_audits(&app);
    let page = browser.get(&format!("/indicators?{QUERY}"));
    assert_eq!(page.status, 200, "{}", page.text);
    assert_eq!(
        report_audits(&app),
        before + 1,
        "one audit row, as the API's"
    );
    for row in rows {
        let want = expected_row(row);
        assert!(page.text.contains(&want), "{want}\nnot on the page");
    }
    assert!(page.text.contains("<a href=\"/indicators\">Indicators</a>"));
    // A chart per breakdown, drawn on the server, nothing the CSP blocks.
    let svg_start = page.text.find("<svg").expect("an inline chart");
    let svg = &page.text[svg_start..page.text[svg_start..].find("</svg>").unwrap() + svg_start];
    assert!(!svg.contains("style=") && !svg.contains("<script"), "{svg}");
    assert!(svg.contains("female"), "{svg}");

    // The CSV link: the API's CSV, byte for byte.
    let link_start = page
        .text
        .find("href=\"/indicators.csv?")
        .expect("a CSV link")
        + 6;
    let link = page.text[link_start..]
        .split('"')
        .next()
        .unwrap()
        .replace("&#38;", "&");
    let csv = browser.get(&link);
    assert_eq!(csv.status, 200, "{}", csv.text);
    let api_csv = app.get(
        "/api/v1/indicators/kz?from=2026-11-01&to=2026-11-30&period=range&by=sex&format=csv",
        &staff.coordinator,
    );
    assert_eq!(csv.text, api_csv.text);
    assert!(csv.text.contains("IND-"), "{}", csv.text);

    // Timeliness per rule over months: the chosen rule's percent per month.
    let rule = json["indicators"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["kind"] == "timeliness")
        .expect("timeliness rules in the report")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let months = browser.get(&format!(
        "/indicators?programme=kz&from=2026-10-01&to=2026-11-30&period=month&chart={rule}"
    ));
    assert_eq!(months.status, 200, "{}", months.text);
    let caption = months.text.split("<figcaption>").nth(1).unwrap();
    assert!(caption.contains("percent · over the periods"), "{caption}");
    let chart = &months.text[months.text.find("<svg").unwrap()..];
    assert!(chart.contains("2026-10") && chart.contains("2026-11"));

    // A field worker has no indicators: no link, and the page is refused.
    let mut worker = Browser::with_session(&app, &staff.worker);
    let today = worker.get("/today");
    assert!(!today.text.contains("href=\"/indicators\""));
    assert_eq!(worker.get(&format!("/indicators?{QUERY}")).status, 403);
}

#[test]
fn a_viewer_sees_suppression_never_the_small_count() {
    let app = TestApp::spawn();
    let staff = november_referrals(&app);
    let (_, viewer) = app.user(&staff.admin, "observer", "viewer", &[]);
    let json = api_report(&app, &viewer);
    assert_eq!(json["suppressed"], true);
    let rows = json["rows"].as_array().unwrap();
    let boy = rows
        .iter()
        .find(|r| r["by"]["sex"] == "male" && r["suppression"] == "primary")
        .expect("the one boy is a suppressed count");
    assert_eq!(boy["cases"], "<5");

    let mut browser = Browser::with_session(&app, &viewer);
    let chart = boy["indicator"].as_str().unwrap();
    let page = browser.get(&format!("/indicators?{QUERY}&chart={chart}"));
    assert_eq!(page.status, 200, "{}", page.text);
    let want = expected_row(boy);
    assert!(
        want.contains("<td class=\"suppressed\">&#60;5</td>"),
        "{want}"
    );
    let at = page.text.find(&want).expect("the boy's row, suppressed");
    let line = &page.text[at..at + page.text[at..].find("</tr>").unwrap()];
    assert!(line.contains("suppressed (small count)"), "{line}");
    assert!(!line.contains("<td>1</td>"), "{line}");
    for row in rows {
        assert!(page.text.contains(&expected_row(row)));
    }
    assert!(page.text.contains("id=\"suppression-note\""));
    // The charts carry the marks, not bars of the small numbers.
    let svg_start = page.text.find("<svg").expect("a chart");
    let svg = &page.text[svg_start..];
    let svg = &svg[..svg.find("</svg>").unwrap()];
    assert!(svg.contains("&lt;5"), "the mark in the chart: {svg}");
}

/// Every role gets from the page (and its CSV) what it gets from the API
/// for the same query: the one access rule.
#[test]
fn each_role_gets_from_the_page_what_the_api_gives_it() {
    let app = TestApp::spawn();
    let staff = app.staff().analyst().elsewhere().build();
    let (_, viewer) = app.user(&staff.admin, "observer", "viewer", &[]);
    let query = "programme=kz&from=2026-11-01&to=2026-11-30&site=KZ-CAM-ALA";
    let api = "/api/v1/indicators/kz?from=2026-11-01&to=2026-11-30&site=KZ-CAM-ALA";
    // (who, their token, the status for this site, whether their role
    // has the header link)
    for (who, token, status, has_link) in [
        ("admin", &staff.admin, 403, false),
        ("coordinator", &staff.coordinator, 200, true),
        ("coordinator of another site", &staff.elsewhere, 403, true),
        ("field worker", &staff.worker, 403, false),
        ("analyst", &staff.analyst, 200, true),
        ("viewer", &viewer, 200, true),
    ] {
        assert_eq!(app.get(api, token).status, status, "API, {who}");
        let mut browser = Browser::with_session(&app, token);
        let page = browser.get(&format!("/indicators?{query}"));
        assert_eq!(page.status, status, "page, {who}: {}", page.text);
        let csv = browser.get(&format!("/indicators.csv?{query}"));
        assert_eq!(csv.status, status, "CSV, {who}: {}", csv.text);
        let link = browser.get("/today").text.contains("href=\"/indicators\"");
        assert_eq!(link, has_link, "the header link, {who}");
    }
}

/// Whether the page shows `report`'s rows as the API gives them now.
fn shows(page: &str, report: &Value) -> bool {
    report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .all(|row| page.contains(&expected_row(row)))
}

/// The page again and again until it shows a current count (no
/// "counting" notice); each view must show nothing else as current.
fn until_counted(browser: &mut Browser, url: &str) -> String {
    for _ in 0..1200 {
        let page = browser.get(url);
        assert_eq!(page.status, 200, "{}", page.text);
        if !page.text.contains("id=\"counting\"") {
            return page.text;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("the count never arrived");
}

/// Counting a year of 100,000 cases takes longer than a page may wait
/// (#18): the page answers at once with the last count of the same report
/// while nothing it counted changed, says it is counting while it has
/// none, and never shows an older count as current (docs/console.md,
/// "Indicators").
#[test]
fn the_page_never_waits_long_for_a_count_nor_shows_an_old_one_as_current() {
    let app = TestApp::spawn_with(|s| s.indicator_page_wait_ms = 0);
    let staff = november_referrals(&app);
    let mut browser = Browser::with_session(&app, &staff.coordinator);
    let url = format!("/indicators?{QUERY}");
    let audits = report_audits(&app);

    // Nothing counted yet, and the page does not wait: it says so, shows
    // no table and comes back by itself.
    let first = browser.get(&url);
    assert_eq!(first.status, 200, "{}", first.text);
    assert!(first.text.contains("id=\"counting\""), "{}", first.text);
    assert!(first.text.contains("<meta http-equiv=\"refresh\""));
    assert!(!first.text.contains("<table class=\"indicators\""));

    let counted = until_counted(&mut browser, &url);
    let report = api_report(&app, &staff.coordinator);
    assert!(shows(&counted, &report), "{counted}");
    assert!(!counted.contains("http-equiv=\"refresh\""));
    let stamp = |page: &str| {
        let at = page.find("id=\"counted-at\"").expect("when it was counted");
        page[at..at + page[at..].find("</p>").unwrap()].to_string()
    };

    // Nothing changed: the same count again, not a new one.
    let again = browser.get(&url);
    assert!(!again.text.contains("id=\"counting\""));
    assert_eq!(stamp(&again.text), stamp(&counted));
    assert!(shows(&again.text, &report));

    // A new referral folds a case: the count is no longer current. The
    // page shows it only as the count of its time while it counts again,
    // and then the new numbers.
    let boy = build::referral(&uuid::Uuid::new_v4().to_string())
        .received_at("2026-11-20T10:00:00+05:00")
        .child("Child 8")
        .sex("male")
        .envelope();
    assert_eq!(phone(&app, &staff.worker).send(&boy).status, 201);
    let report_now = api_report(&app, &staff.coordinator);
    assert_ne!(report_now["rows"], report["rows"], "the boy counts");
    let next = browser.get(&url);
    assert!(next.text.contains("id=\"counting\""), "{}", next.text);
    assert!(next.text.contains("Show the new count"), "{}", next.text);
    assert!(shows(&next.text, &report), "the old count, marked as such");
    assert!(
        !next.text.contains("http-equiv=\"refresh\""),
        "a page with counts never reloads under its reader"
    );
    let recounted = until_counted(&mut browser, &url);
    assert!(shows(&recounted, &report_now), "{recounted}");

    // Every view is a report read: one audit row each, counted or not.
    let views = report_audits(&app) - audits;
    assert!(views >= 5, "{views} audit rows");
}
