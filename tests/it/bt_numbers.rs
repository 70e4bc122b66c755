//! BT case codes (SOP §10.2, bt-sops.md §3.1: `NNN-DDMM-YY-ORG-II`) and
//! the registration's "Case no:" (issue #20 items 10 and 12).

use serde_json::json;

use crate::common::phone::{fixture, phone_for};
use crate::common::TestApp;

/// A registration of `day` as the phone sends it (no case number: the
/// server gives it).
fn registration(day: &str) -> serde_json::Value {
    let mut data = fixture("bt.registration");
    data["header"]["date_identified"] = json!(day);
    data["header"]["date_registered"] = json!(day);
    data
}

/// SOP §10.2: "003 — Number of cases dealt with in the month" by the
/// organisation named in "NCWC — Acronyms of the organization … with whom
/// the child is registered": two sites with one organisation code count
/// together, so they never issue the same code on the same day; "KT —
/// Initials of case manager opening the case (Karma Thanda)".
#[test]
fn two_sites_of_one_organisation_never_issue_the_same_code() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let site = app.post(
        "/api/v1/sites",
        &admin,
        json!({ "code": "BT-NCWC-PARO", "name": "NCWC Paro office", "programme": "bt", "org_code": "NCWC" }),
    );
    assert_eq!(site.status, 201, "{}", site.text);
    let made = app.post(
        "/api/v1/users",
        &admin,
        json!({ "username": "karma.t", "display_name": "Karma Thanda", "role": "field_worker",
                "site_ids": ["BT-NCWC"], "password": crate::common::USER_PASSWORD }),
    );
    assert_eq!(made.status, 201, "{}", made.text);
    let made = app.post(
        "/api/v1/users",
        &admin,
        json!({ "username": "kinley.t", "display_name": "Kinley Tshering", "role": "field_worker",
                "site_ids": ["BT-NCWC-PARO"], "password": crate::common::USER_PASSWORD }),
    );
    assert_eq!(made.status, 201, "{}", made.text);
    let karma = app.token_for("karma.t", crate::common::USER_PASSWORD);
    let kinley = app.token_for("kinley.t", crate::common::USER_PASSWORD);
    let thimphu = phone_for(&app, &karma, "bt");
    let paro = phone_for(&app, &kinley, "bt");
    let mut codes = Vec::new();
    // An admin does not read cases; each worker reads the case they opened.
    for (phone, worker) in [(&thimphu, &karma), (&paro, &kinley), (&thimphu, &karma)] {
        let case_id = uuid::Uuid::new_v4().to_string();
        crate::common::build::submit(
            phone,
            "bt.registration",
            &case_id,
            registration("2026-03-03"),
        );
        let case = app.case(worker, &case_id);
        codes.push(case["number"].as_str().unwrap().to_string());
    }
    assert_eq!(
        codes,
        [
            "001-0303-26-NCWC-KT",
            "002-0303-26-NCWC-KT",
            "003-0303-26-NCWC-KT",
        ]
    );
}

/// §10.2 "Initials of case manager opening the case": a name in Dzongkha
/// script gives no Latin letters, so the admin sets the worker's two
/// letters on their profile, and the codes carry them (no `XX`).
#[test]
fn initials_set_on_the_profile_go_into_the_code() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let bad = app.post(
        "/api/v1/users",
        &admin,
        json!({ "username": "sonam.n", "display_name": "བསོད་ནམས་", "initials": "s1",
                "role": "field_worker", "site_ids": ["BT-NCWC"], "password": crate::common::USER_PASSWORD }),
    );
    assert_eq!(bad.status, 422, "{}", bad.text);
    assert!(bad.text.contains("/initials"), "{}", bad.text);
    let made = app.post(
        "/api/v1/users",
        &admin,
        json!({ "username": "sonam.n", "display_name": "བསོད་ནམས་", "initials": "SN",
                "role": "field_worker", "site_ids": ["BT-NCWC"], "password": crate::common::USER_PASSWORD }),
    );
    assert_eq!(made.status, 201, "{}", made.text);
    assert_eq!(made.body["user"]["initials"], "SN");
    let sonam = app.token_for("sonam.n", crate::common::USER_PASSWORD);
    let phone = phone_for(&app, &sonam, "bt");
    let case_id = uuid::Uuid::new_v4().to_string();
    crate::common::build::submit(
        &phone,
        "bt.registration",
        &case_id,
        registration("2026-03-03"),
    );
    assert_eq!(app.case(&sonam, &case_id)["number"], "001-0303-26-NCWC-SN");
}

/// Issue #20 item 10: the registration's "Case no:" is the code the server
/// allocates when the registration opens the case, never a second one: a
/// code typed on the phone is refused with a reason the worker can act on.
#[test]
fn a_registration_cannot_bring_its_own_case_code() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (_, worker) = app.user(&admin, "karma", "field_worker", &["BT-NCWC"]);
    let phone = phone_for(&app, &worker, "bt");
    let mut data = registration("2026-03-03");
    data["header"]["case_no"] = json!("007-0303-26-NCWC-KT");
    let case_id = uuid::Uuid::new_v4().to_string();
    let res = phone.send(&crate::common::phone::form_envelope(
        "bt.registration",
        &case_id,
        data,
    ));
    assert_eq!(res.status, 422, "{}", res.text);
    assert!(res.text.contains("/data/header/case_no"), "{}", res.text);
    assert!(res.text.contains("given by the server"), "{}", res.text);
}
