//! The case page's decisions in Chromium (issue #18, page 4): a
//! coordinator resolves a conflict two offline edits raised; a field worker
//! sees only their own cases, and no decision forms.

use crate::browser::Browser;
use crate::common;

use common::build;
use common::phone::phone;
use common::{TestApp, USER_PASSWORD};

#[test]
fn a_coordinator_resolves_a_conflict_and_a_field_worker_sees_only_their_cases() {
    let app = TestApp::spawn();
    let staff = app.staff().other_worker().build();
    let (mine, theirs) = (
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
    );
    for (id, who) in [(&mine, &staff.worker), (&theirs, &staff.other_worker)] {
        let referral = build::referral(id)
            .received_at("2026-11-20T17:00:00+05:00")
            .immediate_risk()
            .child("Child A")
            .envelope();
        assert_eq!(phone(&app, who).send(&referral).status, 201);
    }
    // Two offline edits of the child's sex from the same case version.
    let base = app.case(&staff.worker, &mine)["version"].as_i64().unwrap();
    for (sex, day, token) in [
        ("male", "2026-11-21", &staff.worker),
        ("female", "2026-11-22", &staff.coordinator),
    ] {
        let edit = build::offline_child_record(&mine, base, sex, day);
        assert_eq!(phone(&app, token).send(&edit).status, 201);
    }
    let number = |id: &str| {
        app.case(&staff.coordinator, id)["number"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let my_number = number(&mine);
    let Some(browser) = Browser::open(&app) else {
        return;
    };

    // The field worker: their case on the list, not Bolat's; their case's
    // conflict shown, without the form to resolve it.
    browser.sign_in("aigerim", USER_PASSWORD);
    assert_eq!(browser.arrives_at("/today"), "/today");
    browser.goto("/cases");
    let listed = browser.text("main table");
    assert!(listed.contains(&my_number), "{listed}");
    let page = browser.source();
    assert!(page.contains(&format!("href=\"/cases/{mine}\"")));
    assert!(!page.contains(&theirs), "Bolat's case is not listed");
    browser.screenshots("cases-field-worker");
    browser.goto(&format!("/cases/{mine}"));
    assert!(browser
        .text("section[aria-labelledby=conflicts]")
        .contains("child.sex"));
    assert!(!browser.source().contains("/resolution"));
    browser.goto(&format!("/cases/{theirs}"));
    assert!(browser.text("main").contains("There is no such page."));
    browser.goto("/today");
    browser.click("form[action='/sign-out'] button");
    assert_eq!(browser.arrives_at("/sign-in"), "/sign-in");

    // The coordinator keeps the value the late form conflicts with.
    browser.sign_in("manager", USER_PASSWORD);
    assert_eq!(browser.arrives_at("/today"), "/today");
    browser.goto(&format!("/cases/{mine}"));
    browser.screenshots("case-conflict");
    browser.click("form[action$='/resolution'] input[value=other]");
    browser.fill(
        "form[action$='/resolution'] input[name=note]",
        "asked the family",
    );
    browser.click("form[action$='/resolution'] button[type=submit]");
    assert_eq!(browser.text("[role=status]"), "The conflict is resolved.");
    assert!(!browser.source().contains("/resolution\""));
    browser.screenshots("case-conflict-resolved");
    assert_eq!(app.case(&staff.coordinator, &mine)["open_conflicts"], 0);
}
