//! The exports page in a real headless Chromium (the harness of
//! tests/it/browser.rs, which has downloads saved to a directory of the
//! test's): a coordinator downloads a de-identified form CSV, then an
//! identifying case CSV through the disclosure form, after the form has
//! said what was wrong with a first try; screenshots of the page and the
//! disclosure form at 1280×800 and 800×1280.

use crate::browser::Browser;
use crate::common;
use crate::console_exports::two_referrals;

use casesync::db::schema::disclosures;
use common::{TestApp, USER_PASSWORD};
use diesel::prelude::*;
use fantoccini::Locator;

fn choose(browser: &Browser, css: &'static str, value: &'static str) {
    browser.runtime.block_on(async {
        browser
            .client()
            .find(Locator::Css(css))
            .await
            .unwrap()
            .select_by_value(value)
            .await
            .unwrap();
    });
}

fn header_row(bytes: &[u8]) -> String {
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    text.lines().next().unwrap_or_default().to_string()
}

#[test]
fn a_coordinator_downloads_a_deidentified_csv_and_an_identifying_one_through_the_disclosure_form() {
    let app = TestApp::spawn();
    let (_staff, case_id) = two_referrals(&app);
    let Some(browser) = Browser::open(&app) else {
        return;
    };
    browser.sign_in("manager", USER_PASSWORD);
    assert_eq!(browser.arrives_at("/today"), "/today");
    browser.click("nav a[href='/exports']");
    assert_eq!(browser.arrives_at("/exports"), "/exports");
    assert!(browser.text("h1").contains("Exports"));
    browser.screenshots("exports");

    // De-identified: the referral form's submissions at the centre.
    choose(&browser, "#what", "form:kz.referral");
    choose(&browser, "#site", "KZ-CAM-ALA");
    browser.click("#deidentified");
    let csv = browser
        .downloaded("kz.referral.csv")
        .unwrap_or_else(|| panic!("no download; the directory has {:?}", browser.downloads()));
    let header = header_row(&csv);
    assert!(
        header.starts_with("instance_id,case_number,site,form_version"),
        "{header}"
    );
    assert!(!header.contains("child/child_name"), "{header}");
    let text = String::from_utf8(csv).unwrap();
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(!text.contains("Exportov"), "{text}");

    // Identifying: the case export, through the disclosure form.
    choose(&browser, "#what", "cases:kz");
    browser.click("#identifying");
    assert_eq!(
        browser.arrives_at("/exports/disclosure"),
        "/exports/disclosure"
    );
    assert!(browser.text("#exported").contains("KZ"));
    browser.screenshots("exports-disclosure");
    let disclosed = || -> i64 {
        disclosures::table
            .count()
            .get_result(&mut app.conn())
            .unwrap()
    };
    let before = disclosed();
    browser.click("input[name=legal_basis][value=required_by_law]");
    browser.fill("#recipient", "Almaty district court");
    browser.fill("#purpose", "court");
    browser.click("#disclose");
    // Refused: the form again, saying what was wrong; nothing recorded.
    let problems = browser.text("#problems");
    assert!(problems.contains("Nothing was disclosed"), "{problems}");
    assert!(problems.contains("at least 10 characters"), "{problems}");
    assert!(problems.contains("Provision"), "{problems}");
    assert_eq!(disclosed(), before);
    assert_eq!(browser.downloads(), ["kz.referral.csv"]);
    browser.screenshots("exports-disclosure-problems");

    browser.fill("#provision", "Code on Marriage art. 76");
    browser.fill("#purpose", "court report for case 1");
    browser.click("#disclose");
    let csv = browser
        .downloaded("kz-cases.csv")
        .unwrap_or_else(|| panic!("no download; the directory has {:?}", browser.downloads()));
    let header = header_row(&csv);
    assert!(
        header.starts_with("case_id,case_number,programme,site,state"),
        "{header}"
    );
    let text = String::from_utf8(csv).unwrap();
    assert!(text.contains(&case_id), "identifying: the case's own id");
    assert_eq!(disclosed(), before + 1);

    // In Russian, the same page.
    browser.goto("/language/ru?back=/exports");
    assert_eq!(browser.arrives_at("/exports"), "/exports");
    assert!(browser.text("h1").contains("Выгрузки"));
    browser.screenshots("exports-ru");
}
