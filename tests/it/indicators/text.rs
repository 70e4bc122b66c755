//! The indicators that read the manuals' text wrongly (issue #20, items
//! 14–17): each test builds the few cases that tell the faithful reading
//! from the old one and quotes the paragraph it enforces.

use casesync::programmes::Programmes;
use serde_json::{json, Value};

use super::*;

const BT_FEB: &str = "/api/v1/indicators/bt?from=2026-02-01&to=2026-02-28";
const FEB: &str = "2026-02-01..2026-02-28";

fn bt_case(phone: &Phone, name: &'static str, day: &'static str) -> String {
    open_bt(
        phone,
        &Registration {
            name,
            sex: "female",
            dob: "2014-03-02",
            day,
            received_at: "2026-02-02T09:00:00+06:00",
            assigned_at: "2026-02-02T10:00:00+06:00",
            risk: "medium",
            source: "community_cp_mechanism",
            eligible: true,
            consent: true,
        },
    )
}

/// D-09 follow-up visit on `day`.
fn bt_follow_up(day: &str) -> Form {
    let mut data = fixture("bt.follow_up");
    data["header"]["date_followup"] = json!(day);
    ("bt.follow_up", data)
}

/// Annex M E2, "% of referrals for which consent / assent has been
/// provided": the unit is the referral (D-07), each judged on its own
/// answer, not the case's latest referral.
#[test]
fn bt_e2_counts_each_referral_with_its_own_consent() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (_, worker) = app.user(&admin, "karma", "field_worker", &["BT-NCWC"]);
    let (_, coordinator) = app.user(&admin, "pema", "coordinator", &["BT-NCWC"]);
    let phone = phone_for(&app, &worker, "bt");
    // Two referrals of one case: with consent on 3 Feb, without on 10 Feb
    // (the latest). Read by the case's latest facts, the case would count
    // once and without consent (0 of 1).
    let a = bt_case(&phone, "Sonam Choden", "2026-02-02");
    send(&phone, &a, bt_referral("2026-02-03", true));
    send(&phone, &a, bt_referral("2026-02-10", false));
    // One referral with consent in another case.
    let b = bt_case(&phone, "Dechen Wangmo", "2026-02-02");
    send(&phone, &b, bt_referral("2026-02-12", true));
    let r = report(
        &app,
        &coordinator,
        &format!("{BT_FEB}&indicator=BT-E2&timeliness=false"),
    );
    // Three referrals in February, two with consent: 66.7 %, over 2 cases
    // (the cases and children are reported beside the referrals).
    expect(
        &r,
        "BT-E2",
        FEB,
        &[],
        Cell {
            cases: 2,
            children: 2,
            numerator: Some(2),
            denominator: Some(3),
            percent: Some(66.7),
            median_delay_hours: None,
        },
    );
    let item = &r.json["indicators"][0];
    assert_eq!(item["unit"], "records of referral_made", "{item:#}");
}

/// Annex M D3, "% of case plans approved by supervisor" (§9.3 step 11:
/// every version of the plan is approved): the unit is the plan, so a
/// version replaced before its approval counts as not approved.
#[test]
fn bt_d3_counts_plans_not_cases() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (_, worker) = app.user(&admin, "karma", "field_worker", &["BT-NCWC"]);
    let (_, coordinator) = app.user(&admin, "pema", "coordinator", &["BT-NCWC"]);
    let phone = phone_for(&app, &worker, "bt");
    let a = bt_case(&phone, "Sonam Choden", "2026-02-02");
    // Consent and the assessment come first: a plan follows them (§7).
    send(&phone, &a, bt_consent("bt.consent_caregiver", "2026-02-02"));
    send(&phone, &a, bt_assessment("2026-02-02", "medium"));
    // Version 1 agreed 3 Feb, approved 4 Feb; version 2 agreed 16 Feb,
    // never approved. Counted by case, the case has an approval: 1 of 1.
    send(
        &phone,
        &a,
        bt_case_plan("2026-02-03", Involved::Yes, Involved::Yes, false, false),
    );
    approve_at(
        &app,
        &coordinator,
        &a,
        "case_plan",
        "2026-02-04T10:00:00+06:00",
    );
    send(
        &phone,
        &a,
        bt_case_plan("2026-02-16", Involved::Yes, Involved::Yes, false, false),
    );
    let r = report(
        &app,
        &coordinator,
        &format!("{BT_FEB}&indicator=BT-D3&timeliness=false"),
    );
    // Two plans, one approved: 50 %.
    expect(
        &r,
        "BT-D3",
        FEB,
        &[],
        Cell {
            cases: 1,
            children: 1,
            numerator: Some(1),
            denominator: Some(2),
            percent: Some(50.0),
            median_delay_hours: None,
        },
    );
    // The second version approved on 20 Feb: both plans approved.
    approve_at(
        &app,
        &coordinator,
        &a,
        "case_plan",
        "2026-02-20T10:00:00+06:00",
    );
    let r = report(
        &app,
        &coordinator,
        &format!("{BT_FEB}&indicator=BT-D3&timeliness=false"),
    );
    assert_eq!(cell(&r, "BT-D3", FEB, &[]).numerator, Some(2));
}

/// §9.6: "When case closure criteria are met and at least after several
/// follow-up visits and at least one case review meeting has taken place"
/// — G1 needs follow-up visits on at least 2 days besides the review.
#[test]
fn bt_g1_needs_several_follow_up_visits() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (_, worker) = app.user(&admin, "karma", "field_worker", &["BT-NCWC"]);
    let (_, coordinator) = app.user(&admin, "pema", "coordinator", &["BT-NCWC"]);
    let phone = phone_for(&app, &worker, "bt");
    let review = || bt_review("2026-02-15", Present::Yes, Present::Yes, true);
    // Two visits, a review, goal met: meets the criteria.
    let a = bt_case(&phone, "Sonam Choden", "2026-02-02");
    send(&phone, &a, bt_follow_up("2026-02-05"));
    send(&phone, &a, bt_follow_up("2026-02-12"));
    send(&phone, &a, review());
    send(
        &phone,
        &a,
        bt_closure("2026-02-20", "goal_met", true, true, true),
    );
    // One visit only: does not.
    let b = bt_case(&phone, "Dechen Wangmo", "2026-02-02");
    send(&phone, &b, bt_follow_up("2026-02-05"));
    send(&phone, &b, review());
    send(
        &phone,
        &b,
        bt_closure("2026-02-20", "goal_met", true, true, true),
    );
    let r = report(
        &app,
        &coordinator,
        &format!("{BT_FEB}&indicator=BT-G1&timeliness=false"),
    );
    expect(&r, "BT-G1", FEB, &[], Cell::ratio(2, 2, 1, Some(50.0)));
}

/// Annex M G6/G7 give no threshold for "improved" / "satisfied" on the
/// 1–10 scale (bt-sops.md §4.2 C6, C7: "threshold undefined"): the report
/// itself says the ≥ 6 it uses is a proposal, in JSON and in every CSV row.
#[test]
fn bt_g6_g7_say_their_threshold_is_not_the_sops() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (_, coordinator) = app.user(&admin, "pema", "coordinator", &["BT-NCWC"]);
    let path = format!("{BT_FEB}&timeliness=false");
    let r = report(&app, &coordinator, &path);
    for item in r.json["indicators"].as_array().unwrap() {
        let id = item["id"].as_str().unwrap();
        let caveat = item["caveat"].as_str().unwrap_or_default();
        if id.starts_with("BT-G6") || id.starts_with("BT-G7") {
            assert!(
                caveat.contains("no threshold") && caveat.contains("6 or more"),
                "{item:#}"
            );
        } else {
            assert!(item["caveat"].is_null(), "{item:#}");
        }
    }
    let csv = app.get(&format!("{path}&format=csv"), &coordinator);
    assert_eq!(csv.status, 200, "{}", csv.text);
    let (header, rows) = csv_table(&csv.text);
    let at = header
        .iter()
        .position(|h| h == "caveat")
        .expect("a caveat column");
    let g6 = rows
        .iter()
        .find(|row| &row[0] == "BT-G6-child")
        .expect("a G6 row");
    assert!(g6[at].contains("6 or more"), "{g6:?}");
    let g2 = rows
        .iter()
        .find(|row| &row[0] == "BT-G2")
        .expect("a G2 row");
    assert_eq!(&g2[at], "");
}

const KZ_JAN: &str = "/api/v1/indicators/kz?from=2026-01-01&to=2026-01-31";
const JAN: &str = "2026-01-01..2026-01-31";

fn kz_child(name: &'static str) -> Child {
    Child {
        name,
        sex: "female",
        dob: "2013-04-01",
    }
}

/// Table 1, Indicator 5, "Number of cases in which the CABM is placed in
/// temporary care", by "Type of care arrangement": the temporary
/// placement's type, not the arrangement a later care plan or the closure
/// records.
#[test]
fn kz_5_breaks_down_by_the_temporary_placements_type() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (_, worker) = app.user(&admin, "aigerim", "field_worker", &[ALA]);
    let (_, coordinator) = app.user(&admin, "manager", "coordinator", &[ALA]);
    let phone = phone_for(&app, &worker, "kz");
    let child = kz_child("Aruzhan");
    let k = open_kz(&phone, &child, "2026-01-05T10:00:00+05:00");
    send(
        &phone,
        &k,
        kz_temporary_placement("2026-01-06", Placement::FamilyBased, Some("2026-01-20")),
    );
    // Then a care plan and a closure with parental care: the case's latest
    // arrangement is no longer the placement's.
    send(&phone, &k, kz_care_plan(&child, "2026-01-21", false, None));
    send(
        &phone,
        &k,
        kz_closure(
            "2026-01-28",
            "other",
            "no_further_action",
            "parental_care",
            None,
        ),
    );
    let r = report(
        &app,
        &coordinator,
        &format!("{KZ_JAN}&indicator=IND-05&timeliness=false&by=placement_type"),
    );
    expect(
        &r,
        "IND-05",
        JAN,
        &[("placement_type", "family_based_temporary_care")],
        Cell::count(1, 1),
    );
    expect_empty(&r, "IND-05", JAN, &[("placement_type", "parental_care")]);
    let listed: Vec<&str> = r.json["indicators"][0]["by"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(listed.contains(&"placement_type"), "{listed:?}");
    assert!(!listed.contains(&"care_arrangement"), "{listed:?}");
}

/// Table 1, Indicators 6 and 8D require "Duration of placement"; kz-manual.md
/// §4.3: "duration in days; still-open placements measured to the period
/// end". Bands on 8.4.4(b): monthly review, at most 3 months in the unit.
#[test]
fn kz_6_and_8d_break_down_by_duration_of_placement() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (_, worker) = app.user(&admin, "aigerim", "field_worker", &[ALA]);
    let (_, coordinator) = app.user(&admin, "manager", "coordinator", &[ALA]);
    let phone = phone_for(&app, &worker, "kz");
    // 5 → 20 Jan: 15 days.
    let a = open_kz(&phone, &kz_child("Aruzhan"), "2026-01-05T10:00:00+05:00");
    send(
        &phone,
        &a,
        kz_temporary_placement(
            "2026-01-05",
            Placement::CamUnit { open_regime: true },
            Some("2026-01-20"),
        ),
    );
    // From 10 Jan, still running: 21 days at the end of January, 49 at the
    // end of February, 80 at the end of March.
    let b = open_kz(&phone, &kz_child("Dana"), "2026-01-10T10:00:00+05:00");
    send(
        &phone,
        &b,
        kz_temporary_placement(
            "2026-01-10",
            Placement::CamUnit { open_regime: false },
            None,
        ),
    );
    let r = report(
        &app,
        &coordinator,
        &format!("{KZ_JAN}&indicator=IND-06&timeliness=false&by=placement_duration"),
    );
    expect(&r, "IND-06", JAN, &[], Cell::count(2, 2));
    expect(
        &r,
        "IND-06",
        JAN,
        &[("placement_duration", "8-31 days")],
        Cell::count(2, 2),
    );
    // Over the quarter: the running placement measured to 31 March.
    let q = "/api/v1/indicators/kz?from=2026-01-01&to=2026-03-31";
    let r = report(
        &app,
        &coordinator,
        &format!("{q}&indicator=IND-06&timeliness=false&by=placement_duration"),
    );
    expect(
        &r,
        "IND-06",
        Q1,
        &[("placement_duration", "8-31 days")],
        Cell::count(1, 1),
    );
    expect(
        &r,
        "IND-06",
        Q1,
        &[("placement_duration", "63-92 days")],
        Cell::count(1, 1),
    );
    let catalogue = Programmes::shipped();
    for id in ["IND-06", "IND-08D"] {
        let indicator = catalogue
            .get("kz")
            .unwrap()
            .indicators
            .list
            .iter()
            .find(|i| i.id == id)
            .unwrap();
        assert!(
            indicator.by.iter().any(|b| b == "placement_duration"),
            "{id}"
        );
    }
}

/// Table 1, Indicator 12, "remains with their parents / legal
/// representatives after the successful completion of their child
/// protection plan"; 8.9.9(a) has the Manager refer the child and family to
/// support services before closing, so that outcome counts too.
#[test]
fn kz_12_counts_a_successful_plan_closed_with_a_referral_to_support_services() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (_, worker) = app.user(&admin, "aigerim", "field_worker", &[ALA]);
    let (_, coordinator) = app.user(&admin, "manager", "coordinator", &[ALA]);
    let phone = phone_for(&app, &worker, "kz");
    let closed = |name: &'static str, outcome: &str| {
        let k = open_kz(&phone, &kz_child(name), "2026-01-05T10:00:00+05:00");
        send(
            &phone,
            &k,
            kz_closure(
                "2026-01-25",
                "cpp_no_longer_necessary",
                outcome,
                "parental_care",
                None,
            ),
        );
    };
    closed("Aruzhan", "remained_with_parents_after_cpp");
    closed("Dana", "referred_to_support_services");
    let r = report(
        &app,
        &coordinator,
        &format!("{KZ_JAN}&indicator=IND-12&timeliness=false"),
    );
    expect(&r, "IND-12", JAN, &[], Cell::count(2, 2));
}

/// The shipped definitions carry the decisions with their paragraphs.
#[test]
fn the_decisions_are_written_in_the_definitions() {
    let catalogue = Programmes::shipped();
    let bt = &catalogue.get("bt").unwrap().indicators;
    let g1 = bt.list.iter().find(|i| i.id == "BT-G1").unwrap();
    assert!(
        g1.ratio.as_ref().unwrap().0.min_events == vec![("follow_up_conducted".to_string(), 2)]
    );
    let kz = serde_json::to_string(
        &serde_json::from_str::<Value>(
            &std::fs::read_to_string(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("form-definitions/kz/programme.json"),
            )
            .unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert!(kz.contains("still-open placements measured to the period end"));
    assert!(kz.contains("8.9.9(a)"));
}

/// 8.1.4 and Part 13: a readmission reopens the child's file ("Case 1.1");
/// Table 1 Indicators 1 and 2 break the cases down by "whether the
/// referral (i.e. case) is a readmission". The intake's answer (file
/// reopened: readmission) counts the case as one at once; the
/// coordinator's link confirms the child and gives the number `N.1` — the
/// same readmission, counted once, as when only the link says so.
#[test]
fn kz_a_readmission_declared_at_intake_is_the_linked_one() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (_, worker) = app.user(&admin, "aigerim", "field_worker", &[ALA]);
    let (_, coordinator) = app.user(&admin, "manager", "coordinator", &[ALA]);
    let phone = phone_for(&app, &worker, "kz");
    let child = Child {
        name: "Timur Aliyev",
        sex: "male",
        dob: "2010-02-20",
    };
    let first = open_kz(&phone, &child, "2026-01-05T10:00:00+05:00");
    send(
        &phone,
        &first,
        kz_closure(
            "2026-01-10",
            "other",
            "no_further_action",
            "parental_care",
            None,
        ),
    );
    let again = open_kz(&phone, &child, "2026-01-20T10:00:00+05:00");
    let (form, mut data) = kz_intake("2026-01-20T10:00:00+05:00", "2026-01-20T12:00:00+05:00");
    data["case_file"]["previous_referral_found"] = json!(true);
    data["case_file"]["existing_file_found"] = json!(true);
    data["case_file"]["file_action"] = json!("reopened_readmission");
    send(&phone, &again, (form, data));
    let path = format!("{KZ_JAN}&indicator=IND-01&timeliness=false&by=readmission");
    let r = report(&app, &coordinator, &path);
    expect(
        &r,
        "IND-01",
        JAN,
        &[("readmission", "yes")],
        Cell::count(1, 1),
    );
    expect(
        &r,
        "IND-01",
        JAN,
        &[("readmission", "no")],
        Cell::count(1, 1),
    );
    // The coordinator links the child: the number becomes N.1, and the
    // breakdown is the same (one readmission; one child now).
    let root = app.case(&coordinator, &first)["number"]
        .as_str()
        .unwrap()
        .to_string();
    link_readmission(&app, &coordinator, &again, &first);
    assert_eq!(
        app.case(&coordinator, &again)["number"],
        format!("{root}.1")
    );
    let r = report(&app, &coordinator, &path);
    expect(
        &r,
        "IND-01",
        JAN,
        &[("readmission", "yes")],
        Cell::count(1, 1),
    );
    expect(&r, "IND-01", JAN, &[], Cell::count(2, 1));
}
