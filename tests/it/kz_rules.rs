//! Issue #20: the KZ deadline rules, forms and calendar read as the manual
//! words them (items 1–9, 13). Each test quotes the paragraph it enforces.
//! The deadline tests fold timelines with the shipped rules
//! (form-definitions/kz/programme.json); facts are named as the forms set
//! them (docs/facts.md). Timelines shaped like version 2021.1.1 records,
//! which lack the new facts, still fold.

use std::sync::Arc;

use casesync::cases::fold::{fold, Deadline, Folded, Outcome, TimelineEvent};
use casesync::programmes::{Programme, Programmes};
use serde_json::{json, Value};

use crate::common;
use common::build::submit;
use common::phone::{fixture, form_envelope, phone};
use common::TestApp;

fn kz() -> Arc<Programme> {
    Programmes::shipped().get("kz").unwrap().clone()
}

/// Folds `(id, event, occurred_at, facts)` with the shipped KZ rules.
fn fold_kz(events: &[(&str, &str, &str, Value)]) -> Folded {
    let p = kz();
    let mut timeline: Vec<TimelineEvent> = events
        .iter()
        .map(|(id, name, at, facts)| TimelineEvent {
            id: id.to_string(),
            name: name.to_string(),
            occurred_at: p.calendar.moment(&json!(at)).unwrap(),
            facts: facts.as_object().cloned().unwrap().into_iter().collect(),
        })
        .collect();
    fold(&p, &p.calendar, &mut timeline)
}

fn occurrences<'a>(folded: &'a Folded, rule: &str) -> Vec<&'a Deadline> {
    folded.deadlines.iter().filter(|d| d.rule == rule).collect()
}

fn only(folded: &Folded, rule: &str) -> Deadline {
    let found = occurrences(folded, rule);
    assert_eq!(found.len(), 1, "{rule}: {:#?}", folded.deadlines);
    found[0].clone()
}

fn met_on_time(d: &Deadline) -> bool {
    matches!(d.outcome, Outcome::Met { on_time: true, .. })
}

fn utc(p: &Programme, local: &str) -> String {
    p.calendar.moment(&json!(local)).unwrap().at.to_rfc3339()
}

const REFERRAL: (&str, &str, &str) = ("r", "referral_received", "2026-03-02T20:00:00+05:00");

fn referral() -> (&'static str, &'static str, &'static str, Value) {
    (REFERRAL.0, REFERRAL.1, REFERRAL.2, json!({}))
}

/// Item 1. 8.2.3: "If the Manager or delegated Social Worker is unable to
/// accompany the juvenile inspector, the juvenile inspector shall inform the
/// Manager or delegated Social Worker of the outcome of the visit […]
/// immediately or within 3 hours of the visit." When staff went along, D5
/// does not apply.
#[test]
fn d5_applies_only_when_staff_could_not_accompany_the_inspector() {
    let p = kz();
    let visit = json!({
        "kz.danger_info_received_at": "2026-03-03T00:40:00+05:00",
        "kz.juvenile_inspection_visit_at": "2026-03-03T01:00:00+05:00",
        "kz.removal_necessary": false,
    });
    let mut accompanied = visit.clone();
    accompanied["kz.accompanied_inspector"] = json!(true);
    let folded = fold_kz(&[
        referral(),
        (
            "e",
            "emergency_action_taken",
            "2026-03-03T00:40:00+05:00",
            accompanied,
        ),
    ]);
    assert!(
        occurrences(&folded, "D5").is_empty(),
        "{:#?}",
        folded.deadlines
    );

    // Not accompanied: due 3 hours after the visit, met at the outcome
    // time the record gives.
    let mut alone = visit.clone();
    alone["kz.accompanied_inspector"] = json!(false);
    alone["kz.inspector_outcome_received_at"] = json!("2026-03-03T03:30:00+05:00");
    let folded = fold_kz(&[
        referral(),
        (
            "e",
            "emergency_action_taken",
            "2026-03-03T00:40:00+05:00",
            alone,
        ),
    ]);
    let d5 = only(&folded, "D5");
    assert_eq!(d5.due_at.to_rfc3339(), utc(&p, "2026-03-03T04:00:00+05:00"));
    assert!(met_on_time(&d5), "{d5:#?}");

    // A 2021.1.1 record has no accompanied_inspector fact; it asked for the
    // outcome time only when staff did not go: D5 applies then, and only then.
    let mut old = visit.clone();
    old["kz.inspector_outcome_received_at"] = json!("2026-03-03T05:00:00+05:00");
    let folded = fold_kz(&[
        referral(),
        (
            "e",
            "emergency_action_taken",
            "2026-03-03T00:40:00+05:00",
            old,
        ),
    ]);
    assert!(matches!(
        only(&folded, "D5").outcome,
        Outcome::Met { on_time: false, .. }
    ));
    let folded = fold_kz(&[
        referral(),
        (
            "e",
            "emergency_action_taken",
            "2026-03-03T00:40:00+05:00",
            visit,
        ),
    ]);
    assert!(occurrences(&folded, "D5").is_empty());
}

/// Item 2. 8.2.2: "When the Manager or delegated Social Worker has
/// reasonable cause to believe that […] it is necessary to remove the child
/// for his/her protection, [they] shall immediately: a. Notify the
/// Guardianship and Tutelage Authority […]; b. […] seek the assistance of
/// the Department of Juvenile Inspection […]; c. […] give notice to the
/// Office of the Public Prosecutor […] that the child has been removed".
#[test]
fn d4_runs_from_the_removal_decision_and_d4c_from_the_removal() {
    let p = kz();
    // Danger reported at 00:40; the visit at 01:00 finds no cause to
    // remove; at 14:00 new facts give reasonable cause; GTA notified at
    // 15:00 and the inspection asked at 15:30: on time (from 00:40 they
    // would be 14 hours late).
    let decided = json!({
        "kz.danger_info_received_at": "2026-03-03T00:40:00+05:00",
        "kz.accompanied_inspector": true,
        "kz.removal_necessary": true,
        "kz.removal_necessary_at": "2026-03-03T14:00:00+05:00",
        "kz.gta_removal_notified_at": "2026-03-03T15:00:00+05:00",
        "kz.juvenile_inspection_assistance_requested_at": "2026-03-03T15:30:00+05:00",
        "kz.child_removed": false,
    });
    let folded = fold_kz(&[
        referral(),
        (
            "e",
            "emergency_action_taken",
            "2026-03-03T00:40:00+05:00",
            decided.clone(),
        ),
    ]);
    for rule in ["D4a", "D4b"] {
        let d = only(&folded, rule);
        assert_eq!(
            d.started_at.to_rfc3339(),
            utc(&p, "2026-03-03T14:00:00+05:00")
        );
        assert_eq!(d.due_at.to_rfc3339(), utc(&p, "2026-03-03T18:00:00+05:00"));
        assert!(met_on_time(&d), "{rule}: {d:#?}");
    }
    // Removal necessary but not carried out: no notice of a removal is due.
    assert!(
        occurrences(&folded, "D4c").is_empty(),
        "{:#?}",
        folded.deadlines
    );

    // Removed at 20:00, Prosecutor told at 23:00: counted from the removal.
    let mut removed = decided;
    removed["kz.child_removed"] = json!(true);
    removed["kz.child_removed_at"] = json!("2026-03-03T20:00:00+05:00");
    removed["kz.prosecutor_notified_at"] = json!("2026-03-03T23:00:00+05:00");
    let folded = fold_kz(&[
        referral(),
        (
            "e",
            "emergency_action_taken",
            "2026-03-03T00:40:00+05:00",
            removed,
        ),
    ]);
    let d4c = only(&folded, "D4c");
    assert_eq!(
        d4c.due_at.to_rfc3339(),
        utc(&p, "2026-03-04T00:00:00+05:00")
    );
    assert!(met_on_time(&d4c), "{d4c:#?}");

    // A 2021.1.1 record has no time for the reasonable cause: D4a counts
    // from the danger information the record is timed at, as before.
    let old = json!({
        "kz.danger_info_received_at": "2026-03-03T00:40:00+05:00",
        "kz.removal_necessary": true,
        "kz.gta_removal_notified_at": "2026-03-03T01:25:00+05:00",
        "kz.juvenile_inspection_assistance_requested_at": "2026-03-03T01:30:00+05:00",
        "kz.child_removed": false,
    });
    let folded = fold_kz(&[
        referral(),
        (
            "e",
            "emergency_action_taken",
            "2026-03-03T00:40:00+05:00",
            old,
        ),
    ]);
    let d4a = only(&folded, "D4a");
    assert_eq!(
        d4a.started_at.to_rfc3339(),
        utc(&p, "2026-03-03T00:40:00+05:00")
    );
    assert!(met_on_time(&d4a));
}

/// Item 3. 8.4.4(b): the Manager shall, together with other relevant
/// bodies, "review the child's placement at least every calendar month".
/// Each month is met by a review dated in it (a row of the placement
/// record), not by any later record once a review was ever written.
#[test]
fn d12_each_month_is_met_by_a_review_of_that_month() {
    let p = kz();
    let unit = |reviews: Value| {
        json!({
            "care_arrangement": "cam_csc_temporary_residential_unit",
            "placement.start_date": "2026-11-21",
            "kz.placement_reviewed_at": reviews,
        })
    };
    // Reviews on 15 December and 10 January: the first month (to 21
    // December) and the second (from the review, to 15 January) are met on
    // time; the third runs from 10 January to 10 February.
    let folded = fold_kz(&[
        referral(),
        (
            "t",
            "temporary_placement_started",
            "2026-11-21",
            unit(json!(["2026-12-15", "2027-01-10"])),
        ),
    ]);
    let d12 = occurrences(&folded, "D12");
    assert_eq!(d12.len(), 3, "{d12:#?}");
    assert!(met_on_time(d12[0]) && met_on_time(d12[1]), "{d12:#?}");
    assert_eq!(
        d12[0].due_at.to_rfc3339(),
        utc(&p, "2026-12-21T23:59:59+05:00")
    );
    assert_eq!(
        d12[1].due_at.to_rfc3339(),
        utc(&p, "2027-01-15T23:59:59+05:00")
    );
    assert_eq!(
        d12[2].due_at.to_rfc3339(),
        utc(&p, "2027-02-10T23:59:59+05:00")
    );
    assert!(d12[2].is_open());

    // One review only (15 December): a Manager's decision record of 20
    // January does not meet the second month, which stays open, overdue.
    let folded = fold_kz(&[
        referral(),
        (
            "t",
            "temporary_placement_started",
            "2026-11-21",
            unit(json!(["2026-12-15"])),
        ),
        ("d", "decision_made", "2027-01-20", json!({})),
    ]);
    let d12 = occurrences(&folded, "D12");
    assert_eq!(d12.len(), 2, "{d12:#?}");
    assert!(met_on_time(d12[0]));
    assert!(d12[1].is_open(), "{:#?}", d12[1]);
    assert_eq!(
        d12[1].due_at.to_rfc3339(),
        utc(&p, "2027-01-15T23:59:59+05:00")
    );
}

/// Item 4. 8.11.18(d)(i): "Monitoring the situation of the child one month,
/// 3 months, 6 months and 1 year following his/her discharge from care" —
/// from the discharge date, not from the approval of the plan recording it.
#[test]
fn d35_counts_from_the_discharge_from_care() {
    let p = kz();
    // Referral, 8.5.1(c), a social assessment concluding 8.6.10(e), then the
    // care-plan version recording the discharge on 1 March 2027, approved
    // on 20 March.
    let folded = fold_kz(&[
        referral(),
        (
            "ia",
            "initial_assessment_completed",
            "2026-03-05T13:00:00+05:00",
            json!({"kz.ia_decision": "c_reasonable_grounds_for_concern",
                   "kz.ia_decision_date": "2026-03-05"}),
        ),
        (
            "sa",
            "social_assessment_completed",
            "2026-04-20",
            json!({"kz.sa_conclusion": "e_removal_alternative_care"}),
        ),
        (
            "c",
            "care_plan_developed",
            "2027-03-01",
            json!({
                "kz.care_plan_date": "2027-03-01",
                "kz.care_plan_no_longer_necessary": true,
                "kz.care_plan_ending_reason": "return_to_parental_care",
                "placement.end_date": "2027-03-01",
                "kz.cpp_after_discharge": false,
            }),
        ),
        ("a", "care_plan_approved", "2027-03-20", json!({})),
    ]);
    assert_eq!(
        folded.state, "post_discharge_monitoring",
        "{:#?}",
        folded.steps
    );
    for (rule, due) in [
        ("D35a", "2027-04-01T23:59:59+05:00"),
        ("D35b", "2027-06-01T23:59:59+05:00"),
        ("D35c", "2027-09-01T23:59:59+05:00"),
        ("D35d", "2028-03-01T23:59:59+05:00"),
    ] {
        let d = only(&folded, rule);
        assert_eq!(d.due_at.to_rfc3339(), utc(&p, due), "{rule}");
    }
}

/// Item 5. 8.6.1: "A full social assessment of the child shall be completed
/// within eight weeks of the Manager's appointment of a Social Worker under
/// paragraph 8.5.7a." 8.5.7(b): with the 8.5.1(c) decision the Manager
/// notifies the referrer (D14, from the decision's date). 8.8.3(d): the
/// first review "within 30 days from the start of the plan" (D19).
#[test]
fn d14_d15_and_d19_count_from_the_moments_the_text_names() {
    let p = kz();
    let folded = fold_kz(&[
        referral(),
        (
            "ia",
            "initial_assessment_completed",
            "2026-03-05T13:00:00+05:00",
            json!({
                "kz.ia_decision": "c_reasonable_grounds_for_concern",
                "kz.ia_decision_date": "2026-03-09",
                "kz.sa_sw_appointed_at": "2026-03-10",
            }),
        ),
        (
            "sa",
            "social_assessment_completed",
            "2026-04-20",
            json!({"kz.sa_conclusion": "c_harm_not_requiring_removal_cp_meeting"}),
        ),
        (
            "cpm",
            "cp_meeting_held",
            "2026-04-27",
            json!({"kz.cpm_recommendation": "8_7_19_cpp_at_home"}),
        ),
        (
            "cpp",
            "child_protection_plan_finalised",
            "2026-05-04",
            json!({"kz.cpp_finalised_date": "2026-05-04", "kz.cpp_start_date": "2026-05-11"}),
        ),
    ]);
    let d14 = only(&folded, "D14");
    assert_eq!(d14.started_at.to_rfc3339(), utc(&p, "2026-03-09"));
    let d15 = only(&folded, "D15");
    // 8 weeks from Tuesday 10 March: Tuesday 5 May, end of day.
    assert_eq!(
        d15.due_at.to_rfc3339(),
        utc(&p, "2026-05-05T23:59:59+05:00")
    );
    let d19 = only(&folded, "D19");
    assert_eq!(d19.started_at.to_rfc3339(), utc(&p, "2026-05-11"));
    assert_eq!(
        d19.due_at.to_rfc3339(),
        utc(&p, "2026-06-10T23:59:59+05:00")
    );

    // An assessment of version 2021.1.1 (no appointment date): D15 counts
    // from its completion, as before.
    let folded = fold_kz(&[
        referral(),
        (
            "ia",
            "initial_assessment_completed",
            "2026-03-05T13:00:00+05:00",
            json!({"kz.ia_decision": "c_reasonable_grounds_for_concern",
                   "kz.ia_decision_date": "2026-03-05"}),
        ),
    ]);
    assert_eq!(
        only(&folded, "D15").due_at.to_rfc3339(),
        utc(&p, "2026-04-30T23:59:59+05:00")
    );
}

/// Item 6. 8.11.18(a): "Ensuring that, no later than 3 months before the
/// end of the care plan, the care plan sets out the steps that must be
/// taken before, during and after the child's discharge from care".
#[test]
fn d33_transition_steps_are_due_three_months_before_the_plan_ends() {
    let p = kz();
    let ending = |date: &str| {
        json!({
            "kz.care_plan_date": date,
            "kz.care_plan_end_date": "2027-09-30",
            "kz.care_plan_no_longer_necessary": true,
            "kz.transition_step_deadline": ["2027-08-01", "2027-09-30"],
        })
    };
    // Written on 15 June: 3 months before 30 September is 30 June. On time.
    let folded = fold_kz(&[
        referral(),
        (
            "c",
            "care_plan_developed",
            "2027-06-15",
            ending("2027-06-15"),
        ),
    ]);
    let d33 = only(&folded, "D33");
    assert_eq!(
        d33.due_at.to_rfc3339(),
        utc(&p, "2027-06-30T23:59:59+05:00")
    );
    assert!(met_on_time(&d33), "{d33:#?}");
    // Written on 20 August: late.
    let folded = fold_kz(&[
        referral(),
        (
            "c",
            "care_plan_developed",
            "2027-08-20",
            ending("2027-08-20"),
        ),
    ]);
    assert!(matches!(
        only(&folded, "D33").outcome,
        Outcome::Met { on_time: false, .. }
    ));
    // A plan that continues sets out no transition: D33 does not apply.
    let folded = fold_kz(&[
        referral(),
        (
            "c",
            "care_plan_developed",
            "2027-01-10",
            json!({"kz.care_plan_date": "2027-01-10", "kz.care_plan_end_date": "2027-09-30",
                   "kz.care_plan_no_longer_necessary": false}),
        ),
    ]);
    assert!(occurrences(&folded, "D33").is_empty());
}

/// Item 13. Labour Code art. 85 and the 2025 order moving Sunday 5 January's
/// day off to Friday 3 January: 5 January 2025 was a working day.
/// Constitution Day 2026 (Sunday 30 August) moves to Monday 31 August under
/// the law in force. Every year's list names its source.
#[test]
fn the_kz_calendar_has_the_worked_sunday_of_2025_and_31_august_2026_off() {
    use casesync::programmes::Limit;
    let p = kz();
    let cal = &p.calendar;
    let day = |d: &str| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").unwrap();
    assert!(cal.is_working_day(day("2025-01-05")));
    assert!(!cal.is_working_day(day("2025-01-03")));
    // From Thursday 2 January 2025 (a holiday), one working day: Sunday 5th.
    let due = cal.due(
        cal.moment(&json!("2025-01-02")).unwrap(),
        Limit::WorkingDays(1),
    );
    assert_eq!(cal.local_date(due), day("2025-01-05"));
    assert!(!cal.is_working_day(day("2026-08-31")));
    let due = cal.due(
        cal.moment(&json!("2026-08-28")).unwrap(),
        Limit::WorkingDays(1),
    );
    assert_eq!(cal.local_date(due), day("2026-09-01"));

    let file: Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("form-definitions/kz/programme.json"),
        )
        .unwrap(),
    )
    .unwrap();
    for year in ["2025", "2026", "2027"] {
        let source = file["calendar"]["sources"][year]
            .as_str()
            .unwrap_or_default();
        assert!(source.contains("Labour Code"), "{year}: {source}");
    }
}

/// Item 7. 8.8.2: the Manager finalises the plan; 8.8.4(b): the Social
/// Worker then provides a copy to the parent "for their written agreement
/// to follow the plan". A parent who refuses or is abroad (8.7.20) does not
/// block the plan: a reason is recorded instead of a signature.
/// Item 9: one code for the one-year check in the care plan and the
/// post-discharge check (D35d).
#[test]
fn a_plan_records_why_a_parent_has_not_signed_and_the_one_year_check_has_one_code() {
    let app = TestApp::spawn();
    let staff = app.staff().build();
    let worker = phone(&app, &staff.worker);
    let case_id = uuid::Uuid::new_v4().to_string();
    submit(&worker, "kz.referral", &case_id, fixture("kz.referral"));

    let mut plan = fixture("kz.child_protection_plan");
    plan["sign_off"]["parent_agreement"] = json!([
        {"parent_name": "Mother G", "agreement_obtained": false,
         "not_obtained_reason": "Refused to sign on 24 April; the plan was explained to her."}
    ]);
    submit(&worker, "kz.child_protection_plan", &case_id, plan.clone());
    // Neither a signature nor a reason: refused, at the place to fill.
    plan["sign_off"]["parent_agreement"][0]
        .as_object_mut()
        .unwrap()
        .remove("not_obtained_reason");
    let res = worker.send(&form_envelope("kz.child_protection_plan", &case_id, plan));
    assert_eq!(res.status, 422, "{}", res.text);
    assert!(
        res.text
            .contains("/data/sign_off/parent_agreement/0/not_obtained_reason"),
        "{}",
        res.text
    );

    let mut care_plan = fixture("kz.care_plan");
    let monitoring = &care_plan["transition"]["aftercare"]["post_discharge_monitoring"];
    assert!(
        monitoring.to_string().contains("\"1_year\""),
        "{monitoring}"
    );
    care_plan["transition"]["aftercare"]["post_discharge_monitoring"][3]["due"] =
        json!("12_months");
    let res = worker.send(&form_envelope("kz.care_plan", &case_id, care_plan));
    assert_eq!(res.status, 422, "{}", res.text);
    // The same code on the post-discharge check and in D35d.
    let mut check = fixture("kz.post_discharge_check");
    check["check"]["due"] = json!("1_year");
    let res = worker.send(&form_envelope("kz.post_discharge_check", &case_id, check));
    assert_ne!(res.status, 422, "{}", res.text);
    let d35d = kz().rule("D35d").unwrap().clone();
    assert!(format!("{:?}", d35d.met_when).contains("\"1_year\""));
}

/// Item 8. "Case ID Number" on Annexes D, E, G, H, I is the case number the
/// manual gives (Part 13, footnotes 62–67: "Case 1", "Case 1.1"), not the
/// internal id: the server refuses a number that is not the case's, and a
/// form sent without one (ODK Collect never asks) is stored with the case's
/// number filled in, as the paper form carries it.
#[test]
fn the_case_id_number_on_the_paper_forms_is_the_case_number() {
    let app = TestApp::spawn();
    let staff = app.staff().build();
    let worker = phone(&app, &staff.worker);
    let case_id = uuid::Uuid::new_v4().to_string();
    submit(&worker, "kz.referral", &case_id, fixture("kz.referral"));
    let case = app.case(&staff.coordinator, &case_id);
    let number = case["number"].as_str().unwrap().to_string();

    let mut ia = fixture("kz.initial_assessment");
    ia["header"]["case_number"] = json!("999");
    let res = worker.send(&form_envelope(
        "kz.initial_assessment",
        &case_id,
        ia.clone(),
    ));
    assert_eq!(res.status, 422, "{}", res.text);
    assert!(
        res.text.contains("/data/header/case_number"),
        "{}",
        res.text
    );
    assert!(
        res.text
            .contains(&format!("is not this case's number ({number})")),
        "{}",
        res.text
    );
    // A UUID is no case number at all.
    ia["header"]["case_number"] = json!(case_id);
    let res = worker.send(&form_envelope(
        "kz.initial_assessment",
        &case_id,
        ia.clone(),
    ));
    assert_eq!(res.status, 422, "{}", res.text);

    ia["header"]["case_number"] = json!(number);
    submit(&worker, "kz.initial_assessment", &case_id, ia.clone());

    // Left empty, the server fills it from the case.
    ia["header"].as_object_mut().unwrap().remove("case_number");
    let sent = submit(&worker, "kz.initial_assessment", &case_id, ia);
    use casesync::db::schema::submissions;
    use diesel::prelude::*;
    let payload: String = submissions::table
        .find(&sent)
        .select(submissions::payload)
        .first(&mut app.conn())
        .unwrap();
    let stored: Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(stored["data"]["header"]["case_number"], json!(number));
}
