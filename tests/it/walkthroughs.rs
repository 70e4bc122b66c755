//! Walkthroughs over real HTTP: one child's case from referral to the
//! first review of the care plan (KZ), and two Bhutanese cases from
//! registration to closure at the high- and low-risk frequencies (BT).
//! Each step is a form a phone submits (or a coordinator's approval); after
//! each we check the state the programme's rules move the case to and every
//! deadline the step starts, meets or ends, by its due date and outcome.
//!
//! The rules are data (`form-definitions/<p>/programme.json`); the comments
//! name the manual's paragraph each check stands for. Open deadlines are
//! "overdue" or "upcoming" by the real clock, so the tests assert due dates
//! and outcomes (met on time, met late, not applicable), not open statuses.

use crate::common;

use common::build::{approve_at, submit, Staff};
use common::phone::{fixture, form_envelope, phone, phone_for, Phone};
use common::TestApp;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------

/// Occurrence `n` of deadline `rule` on the case.
fn deadline<'a>(case: &'a Value, rule: &str, n: u32) -> &'a Value {
    case["deadlines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["rule"] == rule && d["occurrence"] == n)
        .unwrap_or_else(|| panic!("no {rule} #{n} in {:#}", case["deadlines"]))
}

fn has_deadline(case: &Value, rule: &str) -> bool {
    case["deadlines"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["rule"] == rule)
}

/// Occurrence `n` of `rule` is due at `due` (UTC) and has ended `status`.
fn assert_deadline(case: &Value, rule: &str, n: u32, due: &str, status: &str) {
    let d = deadline(case, rule, n);
    assert_eq!(d["due_at"], due, "{rule} #{n}: {d:#}");
    assert_eq!(d["status"], status, "{rule} #{n}: {d:#}");
}

/// Occurrence `n` of `rule` is due at `due` and still open (upcoming, due
/// soon or overdue: that depends on today's date).
fn assert_open(case: &Value, rule: &str, n: u32, due: &str) {
    let d = deadline(case, rule, n);
    assert_eq!(d["due_at"], due, "{rule} #{n}: {d:#}");
    assert!(
        ["upcoming", "due_soon", "overdue"].contains(&d["status"].as_str().unwrap()),
        "{rule} #{n} should be open: {d:#}"
    );
    assert!(d["ended_at"].is_null(), "{rule} #{n}: {d:#}");
}

fn assert_state(case: &Value, state: &str) {
    assert_eq!(case["state"], state, "{:#}", case);
}

/// The timeline's events in fold order, as (name, state after).
fn timeline_of(app: &TestApp, token: &str, case_id: &str) -> Vec<(String, String)> {
    let res = app.get(&format!("/api/v1/cases/{case_id}/timeline"), token);
    assert_eq!(res.status, 200, "{}", res.text);
    res.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["state_after"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

// ---------------------------------------------------------------------------
// KZ: the forms of a separated foreign child's case, step by step
// ---------------------------------------------------------------------------

fn kz_staff(app: &TestApp) -> Staff {
    app.staff().build()
}

/// Annex C: a separated girl from Uzbekistan found alone at the bus
/// station, referred on Friday 20 November 2026 at 17:00 (Almaty, UTC+5)
/// with evidence of immediate risk.
fn kz_referral() -> Value {
    let mut data = fixture("kz.referral");
    data["receipt"]["received_at"] = json!("2026-11-20T17:00:00+05:00");
    data["receipt"]["immediate_risk"] = json!(true);
    data["referrer"]["referral_date"] = json!("2026-11-20");
    data["signoff"]["referrer_signature"]["signed_date"] = json!("2026-11-20");
    data["signoff"]["referrer_signed_date"] = json!("2026-11-20");
    data
}

/// The 24-hour intake record (8.1.3–8.1.4), completed Saturday 10:00: file
/// opened and the Social Worker assigned the same evening; no instant
/// danger found (she is staying with a neighbour of a relative).
fn kz_intake() -> Value {
    let mut data = fixture("kz.case_intake");
    data["receipt"]["received_at"] = json!("2026-11-20T17:00:00+05:00");
    data["receipt"]["emergency"] = json!(false);
    let actions = &mut data["actions"];
    actions["gta_notified_by_cam_at"] = json!("2026-11-20T18:00:00+05:00");
    actions["police_informed"][0]["informed_at"] = json!("2026-11-20T18:10:00+05:00");
    actions["police_informed"][1]["informed_at"] = json!("2026-11-20T18:30:00+05:00");
    actions["referrer_acknowledged_at"] = json!("2026-11-20T18:15:00+05:00");
    actions["intake_completed_at"] = json!("2026-11-21T10:00:00+05:00");
    data["case_file"]["file_opened_at"] = json!("2026-11-20T18:45:00+05:00");
    data["assignment"]["assigned_at"] = json!("2026-11-20T18:50:00+05:00");
    let policies = &mut data["policies"];
    policies["privacy_policy_explained"]["to_child_date"] = json!("2026-11-21");
    policies["privacy_policy_explained"]["to_parent_date"] = json!("2026-11-23");
    policies["child_protection_policy_explained"]["to_child_date"] = json!("2026-11-21");
    policies["child_protection_policy_explained"]["to_parent_date"] = json!("2026-11-23");
    policies["safeguarding_lead_contacts_given_date"] = json!("2026-11-21");
    data
}

/// Annex D: the initial assessment, completed Sunday 22 November at 13:00
/// (44 hours after the referral), decision 8.5.1(c) reasonable grounds for
/// concern; the child was not removed.
fn kz_initial_assessment() -> Value {
    let mut data = fixture("kz.initial_assessment");
    data["admin"]["assessment_completed_at"] = json!("2026-11-22T13:00:00+05:00");
    data["admin"]["immediate_risk_evidence"] = json!(true);
    data["admin"]["child_removed"] = json!(false);
    data["admin"].as_object_mut().unwrap().remove("removal_at");
    data["decision"]["ia_decision"] = json!("c_reasonable_grounds_for_concern");
    data["decision"]["ia_decision_date"] = json!("2026-11-22");
    data["decision"]["sa_sw_appointed_at"] = json!("2026-11-22");
    data["signoff"]["manager_approved_date"] = json!("2026-11-22");
    data["signoff"]["sw_signature"]["signed_date"] = json!("2026-11-22");
    data["signoff"]["manager_approval"]["signed_date"] = json!("2026-11-22");
    data
}

/// Annex G: the social assessment, completed Thursday 4 March 2027 (late:
/// 8 weeks from the IA ended on 17 January), conclusion 8.6.10(d): the
/// parents are traced, reunification to be decided by a child protection
/// meeting.
fn kz_social_assessment() -> Value {
    let mut data = fixture("kz.social_assessment");
    data["admin"]["sw_appointed_at"] = json!("2026-11-22");
    data["admin"]["completed_at"] = json!("2027-03-04");
    data["conclusion"]["sa_conclusion"] = json!("d_separated_parents_traced_reunify_cp_meeting");
    data["conclusion"]["sa_conclusion_date"] = json!("2027-03-04");
    data["signoff"]["sw_signature"]["signed_date"] = json!("2027-03-04");
    data["signoff"]["manager_approval"]["signed_date"] = json!("2027-03-04");
    data["signoff"]["manager_approved_date"] = json!("2027-03-04");
    data
}

/// 8.7: the child protection meeting, held Tuesday 16 March 2027 at 15:00,
/// the seventh working day after the SA once Monday 8 March (Women's Day)
/// is skipped. It finds that
/// reunification is not in the child's best interests and recommends a
/// care plan (8.7.21(b)).
fn kz_cp_meeting() -> Value {
    let mut data = fixture("kz.cp_meeting");
    let meeting = &mut data["meeting"];
    meeting["scheduled_at"] = json!("2027-03-16T15:00:00+05:00");
    meeting["held_at"] = json!("2027-03-16T15:00:00+05:00");
    for invitee in data["invitees"].as_array_mut().unwrap() {
        invitee["invited_at"] = json!("2027-03-04");
        if invitee.get("written_report_received_at").is_some() {
            invitee["written_report_received_at"] = json!("2027-03-15");
        }
    }
    data["participants"]["information_notice_sent_at"] = json!("2027-03-05");
    let findings = data["findings"].as_object_mut().unwrap();
    findings.insert("reunification_in_best_interests".into(), json!("no"));
    findings.remove("reunification_location");
    findings.remove("reunification_place");
    let recommendations = data["recommendations"].as_object_mut().unwrap();
    recommendations.insert(
        "recommendation".into(),
        json!("8_7_21b_care_plan_no_reunification"),
    );
    recommendations.remove("cpp_outline");
    data
}

/// Annex I: the care plan, dated Tuesday 30 March 2027 (two weeks after
/// the meeting): kinship care with the uncle's family, no return.
fn kz_care_plan() -> Value {
    let mut data = fixture("kz.care_plan");
    data["preamble"]["care_plan_basis"] = json!("cpm_no_reunification");
    let admin = data["admin"].as_object_mut().unwrap();
    admin.insert("trigger_decision_date".into(), json!("2027-03-16"));
    admin.insert("assessments_reviewed_date".into(), json!("2027-03-18"));
    admin.insert("version".into(), json!(1));
    admin.remove("supersedes_plan_id");
    admin.insert("care_plan_date".into(), json!("2027-03-30"));
    admin.insert("commencement_date".into(), json!("2027-04-01"));
    admin.insert("first_review_date".into(), json!("2027-04-23"));
    admin.remove("next_review_date");
    admin.insert("plan_end_date".into(), json!("2030-05-14"));
    data["care_arrangement"]["placement_start_date"] = json!("2027-04-01");
    data["reviews"] = json!([{ "scheduled_date": "2027-04-23" }]);
    data["return_assessment"]["return_in_best_interests"] = json!(false);
    data["transition"] = json!({ "care_no_longer_necessary": false });
    data["provisions"]
        .as_object_mut()
        .unwrap()
        .remove("transition_steps");
    data
}

/// 8.11.3: the first review of the care plan, Friday 23 April 2027 at
/// 10:00: continue the plan (8.11.16(a)), accepted by the Manager.
fn kz_care_plan_review() -> Value {
    let mut data = fixture("kz.care_plan_review");
    let meeting = &mut data["meeting"];
    meeting["scheduled_at"] = json!("2027-04-23T10:00:00+05:00");
    meeting["held_at"] = json!("2027-04-23T10:00:00+05:00");
    meeting["sw_progress_report_sent_at"] = json!("2027-04-14");
    meeting["carer_reports_made_available_at"] = json!("2027-04-19");
    for invitee in data["invitees"].as_array_mut().unwrap() {
        invitee["invited_at"] = json!("2027-04-09");
        if invitee.get("written_report_received_at").is_some() {
            invitee["written_report_received_at"] = json!("2027-04-19");
        }
    }
    data["participants"]["information_notice_sent_at"] = json!("2027-04-12");
    data["recommendations"] = json!({
        "decision": "a_continue",
        "manager_accepts": true,
        "next_review_date": "2027-07-23"
    });
    data
}

/// Part 13: the Manager's decision record of the IA decision 8.5.1(c), the
/// day of the assessment.
fn kz_decision() -> Value {
    let mut data = fixture("kz.decision");
    data["decision"]["date"] = json!("2026-11-22");
    data["decision"]["decision_type"] = json!("ia_decision");
    data
}

/// The seven forms of the KZ walkthrough, in the order they
/// happened: referral → initial assessment with decision (c) → decision
/// record → social assessment → child protection meeting → plan → plan
/// review.
const KZ_SEVEN: [Step; 7] = [
    ("kz.referral", kz_referral),
    ("kz.initial_assessment", kz_initial_assessment),
    ("kz.decision", kz_decision),
    ("kz.social_assessment", kz_social_assessment),
    ("kz.cp_meeting", kz_cp_meeting),
    ("kz.care_plan", kz_care_plan),
    ("kz.care_plan_review", kz_care_plan_review),
];

/// A KZ case opened by `phone` with the referral above.
fn open_kz_case(phone: &Phone) -> String {
    let case_id = uuid::Uuid::new_v4().to_string();
    submit(phone, "kz.referral", &case_id, kz_referral());
    case_id
}

// ---------------------------------------------------------------------------
// 1. KZ: separated foreign child, referral to the first care-plan review
// ---------------------------------------------------------------------------

#[test]
fn kz_separated_child_from_referral_to_the_first_care_plan_review() {
    let app = TestApp::spawn();
    let staff = kz_staff(&app);
    let worker = phone(&app, &staff.worker);
    let get = |id: &str| app.case(&staff.coordinator, id);

    // Referral (8.1.1), Friday 17:00 local = 12:00 UTC.
    let case_id = open_kz_case(&worker);
    let case = get(&case_id);
    assert_state(&case, "referred");
    assert_eq!(case["number"], "1");
    // D2, 8.1.3: intake steps within 24 hours of the referral.
    assert_open(&case, "D2", 1, "2026-11-21T12:00:00Z");
    // D6, 8.3.1: a Social Worker assigned "immediately" — the worker who
    // opened the case is assigned at once.
    assert_deadline(&case, "D6", 1, "2026-11-21T16:00:00Z", "met_on_time");
    // D7, 8.2.4 / 8.3.3: immediate risk, initial assessment within 48 h:
    // Sunday 22 November 17:00 local.
    assert_open(&case, "D7", 1, "2026-11-22T12:00:00Z");
    // D8 (72 h) is for referrals without evidence of immediate risk.
    assert!(!has_deadline(&case, "D8"));
    // D3, 8.2.1: emergency measures "immediately" (4 h, P).
    assert_open(&case, "D3", 1, "2026-11-20T16:00:00Z");

    // Intake (8.1.3–8.1.4) Saturday 10:00, within the 24 hours; the SW is
    // already assigned, so the case moves straight to the IA (8.3.1).
    submit(&worker, "kz.case_intake", &case_id, kz_intake());
    let case = get(&case_id);
    assert_state(&case, "initial_assessment");
    assert_deadline(&case, "D2", 1, "2026-11-21T12:00:00Z", "met_on_time");
    // No instant danger found at intake: the emergency rule no longer applies.
    assert_deadline(&case, "D3", 1, "2026-11-20T16:00:00Z", "not_applicable");

    // Initial assessment Sunday 13:00 — 44 h after the referral — with
    // decision 8.5.1(c): D7 met; the social assessment starts (8.5.7(a)).
    submit(
        &worker,
        "kz.initial_assessment",
        &case_id,
        kz_initial_assessment(),
    );
    let case = get(&case_id);
    assert_state(&case, "social_assessment");
    assert_deadline(&case, "D7", 1, "2026-11-22T12:00:00Z", "met_on_time");
    assert_eq!(
        case["facts"]["kz.ia_decision"],
        "c_reasonable_grounds_for_concern"
    );
    // D14, 8.5.7(b): referrer told the case is still being considered
    // (with the decision: 24 h, P), counted from the decision's date,
    // Sunday 22 November, which gives no hour: from that day's start.
    assert_open(&case, "D14", 1, "2026-11-22T19:00:00Z");
    // D15, 8.6.1: social assessment within 8 weeks of the decision: by the
    // end of Sunday 17 January 2027, local time.
    assert_open(&case, "D15", 1, "2027-01-17T18:59:59Z");

    // Social assessment completed Thursday 4 March 2027, some six weeks
    // late, concluding 8.6.10(d): a child protection meeting is convened.
    submit(
        &worker,
        "kz.social_assessment",
        &case_id,
        kz_social_assessment(),
    );
    let case = get(&case_id);
    assert_state(&case, "cp_meeting_pending");
    assert_deadline(&case, "D15", 1, "2027-01-17T18:59:59Z", "met_late");
    // D16, 8.7.1–8.7.2: the meeting within 7 working days of the SA. From
    // Thu 4 March: Fri 5, (Mon 8 International Women's Day), Tue 9, Wed 10,
    // Thu 11, Fri 12, Mon 15, Tue 16 — the seventh. Counting weekends only
    // it would be Monday 15 March. (15 March, reported as Constitution Day
    // from 2027, is a working day until the amended law is published: #20
    // item 13, docs/programmes.md.)
    assert_open(&case, "D16", 1, "2027-03-16T18:59:59Z");

    // The meeting on Tuesday 16 March at 15:00 is in time only because the
    // holiday does not count; it recommends a care plan (8.7.21(b)).
    submit(&worker, "kz.cp_meeting", &case_id, kz_cp_meeting());
    let case = get(&case_id);
    assert_state(&case, "care_plan_drafting");
    assert_deadline(&case, "D16", 1, "2027-03-16T18:59:59Z", "met_on_time");
    // 8.7.4: the teacher's written report was due 2 working days before
    // the meeting — counted back over the weekend: Monday 15, Friday 12
    // March — and arrived on Monday 15th: late.
    assert_deadline(&case, "D17", 1, "2027-03-12T18:59:59Z", "met_late");
    // No child protection plan is to be drawn up (D18 is for 8.7.19–20).
    assert!(!has_deadline(&case, "D18"));
    // D24, 8.10.1 / 8.10.3: the care plan within 21 days of the meeting:
    // Tuesday 6 April 2027.
    assert_open(&case, "D24", 1, "2027-04-06T18:59:59Z");

    // Care plan dated Tuesday 30 March: D24 met; every version needs the
    // written approval (8.10.10), so the case waits for the Manager.
    submit(&worker, "kz.care_plan", &case_id, kz_care_plan());
    let case = get(&case_id);
    assert_state(&case, "care_plan_awaiting_approval");
    assert_deadline(&case, "D24", 1, "2027-04-06T18:59:59Z", "met_on_time");
    // D25, 8.10.3(g) / 8.11.3: first review within 28 days of the care-plan
    // date: Tuesday 27 April 2027.
    assert_open(&case, "D25", 1, "2027-04-27T18:59:59Z");
    // Kinship care: the residential-placement review (D27) does not apply.
    assert!(!has_deadline(&case, "D27"));

    // A field worker may not approve; the Manager approves on Friday 2
    // April: the care plan is in force (8.10.10–8.10.11).
    app.post(
        &format!("/api/v1/cases/{case_id}/approvals"),
        &staff.worker,
        json!({"subject": "care_plan", "decision": "approved"}),
    )
    .assert_problem(403, "forbidden");
    approve_at(
        &app,
        &staff.coordinator,
        &case_id,
        "care_plan",
        "2027-04-02T11:00:00+05:00",
    );
    let case = get(&case_id);
    assert_state(&case, "care_plan_active");
    assert_open(&case, "D25", 1, "2027-04-27T18:59:59Z");

    // The first review on Friday 23 April, within the 28 days: D25 met; the
    // next review is due no later than 3 months after it (8.11.3, D26):
    // Friday 23 July 2027.
    submit(
        &worker,
        "kz.care_plan_review",
        &case_id,
        kz_care_plan_review(),
    );
    let case = get(&case_id);
    assert_state(&case, "care_plan_active");
    assert_deadline(&case, "D25", 1, "2027-04-27T18:59:59Z", "met_on_time");
    assert_open(&case, "D26", 1, "2027-07-23T18:59:59Z");

    // The timeline tells the same story, event by event.
    assert_eq!(
        timeline_of(&app, &staff.coordinator, &case_id),
        pairs(&[
            ("referral_received", "referred"),
            ("case_assigned", "referred"),
            ("intake_completed", "initial_assessment"),
            ("initial_assessment_completed", "social_assessment"),
            ("social_assessment_completed", "cp_meeting_pending"),
            ("cp_meeting_held", "care_plan_drafting"),
            ("care_plan_developed", "care_plan_awaiting_approval"),
            ("care_plan_approved", "care_plan_active"),
            ("care_plan_review_held", "care_plan_active"),
        ])
    );
}

// ---------------------------------------------------------------------------
// Arrival order: the same six forms in three orders give the same case
// ---------------------------------------------------------------------------

/// What must agree between cases built from the same forms: state, facts
/// and deadlines (by rule, occurrence, start, due date, status, end). An
/// open deadline's status is read against the clock, which may pass a due
/// date between two reads: open ones compare as "open".
fn comparable(case: &Value) -> Value {
    let mut deadlines: Vec<Value> = case["deadlines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let status = match d["status"].as_str().unwrap() {
                "upcoming" | "due_soon" | "overdue" => "open",
                ended => ended,
            };
            json!({
                "rule": d["rule"],
                "occurrence": d["occurrence"],
                "started_at": d["started_at"],
                "due_at": d["due_at"],
                "status": status,
                "ended_at": d["ended_at"],
            })
        })
        .collect();
    deadlines.sort_by_key(|d| {
        (
            d["rule"].as_str().unwrap().to_string(),
            d["occurrence"].as_i64().unwrap(),
        )
    });
    json!({ "state": case["state"], "facts": case["facts"], "deadlines": deadlines })
}

/// A form after the referral, and the data it carries.
type Step = (&'static str, fn() -> Value);

#[test]
fn kz_forms_arriving_in_any_order_give_the_same_case() {
    let app = TestApp::spawn();
    let staff = kz_staff(&app);
    let worker = phone(&app, &staff.worker);
    // After the referral that opens the case, in the order they happened.
    let steps: [Step; 5] = [
        ("kz.case_intake", kz_intake),
        ("kz.initial_assessment", kz_initial_assessment),
        ("kz.social_assessment", kz_social_assessment),
        ("kz.cp_meeting", kz_cp_meeting),
        ("kz.care_plan", kz_care_plan),
    ];
    let orders: [[usize; 5]; 3] = [[0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [2, 4, 0, 3, 1]];
    let mut cases = Vec::new();
    for order in orders {
        let case_id = open_kz_case(&worker);
        for i in order {
            let (form_id, data) = steps[i];
            submit(&worker, form_id, &case_id, data());
        }
        cases.push(app.case(&staff.coordinator, &case_id));
    }
    let expected = comparable(&cases[0]);
    assert_eq!(expected["state"], "care_plan_awaiting_approval");
    for (case, order) in cases.iter().zip(orders).skip(1) {
        assert_eq!(comparable(case), expected, "arrival order {order:?}");
    }
    // And they are the case of the walkthrough: D7, D15, D16, D24 as there.
    let first = &cases[0];
    assert_deadline(first, "D7", 1, "2026-11-22T12:00:00Z", "met_on_time");
    assert_deadline(first, "D15", 1, "2027-01-17T18:59:59Z", "met_late");
    assert_deadline(first, "D16", 1, "2027-03-16T18:59:59Z", "met_on_time");
    assert_deadline(first, "D24", 1, "2027-04-06T18:59:59Z", "met_on_time");
}

// ---------------------------------------------------------------------------
// BT: the forms of a case, step by step
// ---------------------------------------------------------------------------

fn bt_staff(app: &TestApp) -> Staff {
    app.staff().bt().build()
}

/// D-04 registration on `day`, reported that morning, with the initial
/// risk level `risk` (§8.2).
fn bt_registration(day: &str, risk: &str) -> Value {
    let mut data = fixture("bt.registration");
    data["header"]["date_identified"] = json!(day);
    data["header"]["date_registered"] = json!(day);
    data["intake"]["report_received_at"] = json!(format!("{day}T09:40:00+06:00"));
    data["intake"]["assigned_at"] = json!(format!("{day}T11:05:00+06:00"));
    data["intake"]["first_contact_at"] = json!(format!("{day}T16:30:00+06:00"));
    data["initial_risk"]["initial_risk_level"] = json!(risk);
    data["signoff"]["submitted_by"]["signed_date"] = json!(day);
    data
}

/// D-05 comprehensive assessment completed on `day`, risk level `risk`.
fn bt_assessment(day: &str, risk: &str) -> Value {
    let mut data = fixture("bt.assessment");
    data["header"]["date_completed"] = json!(day);
    data["comprehensive_risk"]["comprehensive_risk_level"] = json!(risk);
    data["signoff"]["submitted_by"]["signed_date"] = json!(day);
    data
}

/// D-06 case plan agreed with the child and the guardian on `day`.
fn bt_case_plan(day: &str, next_review: &str) -> Value {
    let mut data = fixture("bt.case_plan");
    data["header"]["date_agreed"] = json!(day);
    for participant in data["agreements"]["participants"].as_array_mut().unwrap() {
        participant["signature"]["signed_date"] = json!(day);
    }
    data["approval"]["approval_date"] = json!(day);
    data["approval"]["next_review_date"] = json!(next_review);
    data["signoff"]["submitted_by"]["signed_date"] = json!(day);
    data["signoff"]["approved_by"]["signed_date"] = json!(day);
    data
}

/// D-09 follow-up on `day`, the child seen; `final_one` for the final
/// follow-up after closure.
fn bt_follow_up(day: &str, final_one: bool) -> Value {
    let mut data = fixture("bt.follow_up");
    data["header"]["date_followup"] = json!(day);
    data["details"]["contact_successful"] = json!(true);
    data["details"]["is_final_followup"] = json!(final_one);
    if final_one {
        data["next_steps"] = json!({ "further_followup_needed": "no" });
    } else {
        data["next_steps"]["further_followup_needed"] = json!("yes");
    }
    data["signoff"]["submitted_by"]["signed_date"] = json!(day);
    data
}

/// D-10 case review on `day`: the objective is achieved, closure is
/// recommended (§9.5 step 5.B); the risk level is unchanged.
fn bt_review_recommending_closure(day: &str) -> Value {
    let mut data = fixture("bt.review");
    data["header"]["date_review"] = json!(day);
    data["next_steps"] = json!({
        "reassessment_needed": "no",
        "plan_adjustment_needed": "no",
        "risk_level_changed": "no",
        "recommend_closure": "yes",
        "recommend_closure_details": "Safe with her grandmother; plan objectives met.",
        "next_review_needed": "no"
    });
    data["signoff"]["submitted_by"]["signed_date"] = json!(day);
    data["signoff"]["approved_by"]["signed_date"] = json!(day);
    data["signoff"]["approval_date"] = json!(day);
    data
}

/// D-11 case closure on `day`: goal met, agreed with the child and the
/// caregiver, final follow-up planned for `final_follow_up`.
fn bt_closure(day: &str, final_follow_up: &str) -> Value {
    let mut data = fixture("bt.case_closure");
    data["header"]["date_closed"] = json!(day);
    data["reason"] = json!({ "closure_reason": "goal_met" });
    data["situation"]["situation_summary"] =
        json!("Child A lives safely with her grandmother and attends school.");
    let arrangements = data["arrangements"].as_object_mut().unwrap();
    for (field, why_not) in [
        ("discussed_with_child", "discussed_with_child_why_not"),
        (
            "discussed_with_caregiver",
            "discussed_with_caregiver_why_not",
        ),
        ("child_feedback_gathered", "child_feedback_why_not"),
        ("caregiver_feedback_gathered", "caregiver_feedback_why_not"),
    ] {
        arrangements.insert(field.into(), json!("yes"));
        arrangements.remove(why_not);
    }
    arrangements.insert("final_followup_planned".into(), json!("yes"));
    arrangements.insert("final_followup_date".into(), json!(final_follow_up));
    for approval in data["approvals_section"]["approvals"]
        .as_array_mut()
        .unwrap()
    {
        approval["signature"]["signed_date"] = json!(day);
    }
    data["approvals_section"]["closure_approved_at"] = json!(day);
    data
}

/// The BT case code pattern of bt-sops §3.1: `NNN-DDMM-YY-ORG-II`, i.e.
/// `^\d{3}-\d{4}-\d{2}-[A-Z][A-Z0-9]{1,9}-[A-Z]{2,3}$`.
fn is_bt_case_code(code: &str) -> bool {
    let parts: Vec<&str> = code.split('-').collect();
    let digits = |s: &str, n: usize| s.len() == n && s.chars().all(|c| c.is_ascii_digit());
    parts.len() == 5
        && digits(parts[0], 3)
        && digits(parts[1], 4)
        && digits(parts[2], 2)
        && (2..=10).contains(&parts[3].len())
        && parts[3].starts_with(|c: char| c.is_ascii_uppercase())
        && parts[3]
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        && (2..=3).contains(&parts[4].len())
        && parts[4].chars().all(|c| c.is_ascii_uppercase())
}

// ---------------------------------------------------------------------------
// 2. BT: high risk, registration to closure
// ---------------------------------------------------------------------------

#[test]
fn bt_high_risk_case_from_registration_to_closure() {
    let app = TestApp::spawn();
    let staff = bt_staff(&app);
    let worker = phone_for(&app, &staff.worker, "bt");
    let get = |id: &str| app.case(&staff.coordinator, id);
    let case_id = uuid::Uuid::new_v4().to_string();

    // D-04 registration, Monday 1 June 2026, initial risk HIGH.
    submit(
        &worker,
        "bt.registration",
        &case_id,
        bt_registration("2026-06-01", "high"),
    );
    let case = get(&case_id);
    assert_state(&case, "registered");
    // §3.1: NNN-DDMM-YY-ORG-II — the site's first case of June 2026,
    // registered 1 June, at the NCWC.
    // "KA": "karma" has no second name; the SOP wants the worker's
    // initials, not a padding, so a single name gives its first two letters.
    let code = case["number"].as_str().unwrap();
    assert!(is_bt_case_code(code), "{code}");
    assert_eq!(code, "001-0106-26-NCWC-KA");
    // §8.2, Annex B: high risk — comprehensive assessment the same day
    // (before leaving the child): by the end of 1 June, Thimphu (UTC+6).
    assert_open(&case, "BT-2", 1, "2026-06-01T17:59:59Z");
    // §9.2's default of one week is for cases with no initial risk level.
    assert!(!has_deadline(&case, "BT-2-default"));
    // §9.1 step 1: assigned within 24 h of the report — the registering
    // case manager is assigned at once.
    assert_deadline(&case, "BT-1a", 1, "2026-06-02T03:40:00Z", "met_on_time");

    // D-05 the same day, risk confirmed high: met; case plan due in 3
    // days (high).
    submit(
        &worker,
        "bt.assessment",
        &case_id,
        bt_assessment("2026-06-01", "high"),
    );
    let case = get(&case_id);
    assert_state(&case, "assessed");
    assert_deadline(&case, "BT-2", 1, "2026-06-01T17:59:59Z", "met_on_time");
    assert_open(&case, "BT-3", 1, "2026-06-04T17:59:59Z");
    assert!(!has_deadline(&case, "BT-3-default"));

    // D-06 agreed on Thursday 4 June, the third day: met; to the supervisor.
    submit(
        &worker,
        "bt.case_plan",
        &case_id,
        bt_case_plan("2026-06-04", "2026-07-03"),
    );
    let case = get(&case_id);
    assert_state(&case, "plan_awaiting_approval");
    assert_deadline(&case, "BT-3", 1, "2026-06-04T17:59:59Z", "met_on_time");

    // §9.3 step 11: the supervisor approves on Friday 5 June at 10:00;
    // implementation starts. §8.2 high risk: follow-ups at least twice a
    // week (84 h: Monday 8 June 22:00) and a review every month (5 July).
    approve_at(
        &app,
        &staff.coordinator,
        &case_id,
        "case_plan",
        "2026-06-05T10:00:00+06:00",
    );
    let case = get(&case_id);
    assert_state(&case, "in_implementation");
    assert_open(&case, "BT-5a", 1, "2026-06-08T16:00:00Z");
    assert_open(&case, "BT-5b", 1, "2026-07-05T17:59:59Z");

    // Follow-ups (D-09): Monday 8 June, in time; the next is counted from
    // that day: 84 h from its start, Thursday 11 June noon.
    submit(
        &worker,
        "bt.follow_up",
        &case_id,
        bt_follow_up("2026-06-08", false),
    );
    let case = get(&case_id);
    assert_deadline(&case, "BT-5a", 1, "2026-06-08T16:00:00Z", "met_on_time");
    assert_open(&case, "BT-5a", 2, "2026-06-11T06:00:00Z");

    // Thursday 11 June, in time; the next due Sunday 14 June noon.
    submit(
        &worker,
        "bt.follow_up",
        &case_id,
        bt_follow_up("2026-06-11", false),
    );
    let case = get(&case_id);
    assert_deadline(&case, "BT-5a", 2, "2026-06-11T06:00:00Z", "met_on_time");
    assert_open(&case, "BT-5a", 3, "2026-06-14T06:00:00Z");

    // Monday 15 June: a day late (met late); the next due Thursday 18 June.
    submit(
        &worker,
        "bt.follow_up",
        &case_id,
        bt_follow_up("2026-06-15", false),
    );
    let case = get(&case_id);
    assert_state(&case, "in_implementation");
    assert_deadline(&case, "BT-5a", 3, "2026-06-14T06:00:00Z", "met_late");
    assert_open(&case, "BT-5a", 4, "2026-06-18T06:00:00Z");

    // D-10 review on Wednesday 17 June, within the month: met; the next
    // review a month after it (17 July). Objective achieved: closure
    // proposed (§9.5 step 5.B, §9.6 step 1).
    submit(
        &worker,
        "bt.review",
        &case_id,
        bt_review_recommending_closure("2026-06-17"),
    );
    let case = get(&case_id);
    assert_state(&case, "closure_proposed");
    assert_deadline(&case, "BT-5b", 1, "2026-07-05T17:59:59Z", "met_on_time");
    assert_open(&case, "BT-5b", 2, "2026-07-17T17:59:59Z");
    // Follow-ups continue while closure is considered.
    assert_open(&case, "BT-5a", 4, "2026-06-18T06:00:00Z");

    // D-11 closure the same day: to the supervisor (§9.6 step 2).
    submit(
        &worker,
        "bt.case_closure",
        &case_id,
        bt_closure("2026-06-17", "2026-09-15"),
    );
    let case = get(&case_id);
    assert_state(&case, "closure_awaiting_approval");
    assert!(case["closed_at"].is_null());
    assert_open(&case, "BT-5a", 4, "2026-06-18T06:00:00Z");
    assert_open(&case, "BT-5b", 2, "2026-07-17T17:59:59Z");

    // Approved on Thursday 18 June at 09:00: closed. The follow-up and the
    // review still open end as not applicable; the final follow-up is due
    // 3 months after closure (§9.6 step 7), 18 September 2026.
    approve_at(
        &app,
        &staff.coordinator,
        &case_id,
        "closure",
        "2026-06-18T09:00:00+06:00",
    );
    let case = get(&case_id);
    assert_state(&case, "closed");
    assert_eq!(case["closed_at"], "2026-06-18T03:00:00Z");
    assert_deadline(&case, "BT-5a", 4, "2026-06-18T06:00:00Z", "not_applicable");
    assert_deadline(&case, "BT-5b", 2, "2026-07-17T17:59:59Z", "not_applicable");
    assert_open(&case, "BT-6f", 1, "2026-09-18T17:59:59Z");
    let open: Vec<&Value> = case["deadlines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["ended_at"].is_null())
        .collect();
    assert_eq!(open.len(), 1, "only the final follow-up is open: {open:#?}");

    // The final follow-up on 15 September meets it; the case stays closed.
    submit(
        &worker,
        "bt.follow_up",
        &case_id,
        bt_follow_up("2026-09-15", true),
    );
    let case = get(&case_id);
    assert_state(&case, "closed");
    assert_deadline(&case, "BT-6f", 1, "2026-09-18T17:59:59Z", "met_on_time");

    // Same-day events fold in workflow order: the opening and the
    // assignment made with it, then the events in the order the
    // transitions first name them.
    assert_eq!(
        timeline_of(&app, &staff.coordinator, &case_id),
        pairs(&[
            ("case_registered", "registered"),
            ("case_assigned", "registered"),
            ("assessment_completed", "assessed"),
            ("case_plan_agreed", "plan_awaiting_approval"),
            ("case_plan_approved", "in_implementation"),
            ("follow_up_conducted", "in_implementation"),
            ("follow_up_conducted", "in_implementation"),
            ("follow_up_conducted", "in_implementation"),
            ("review_held", "closure_proposed"),
            ("case_closed", "closure_awaiting_approval"),
            ("closure_approved", "closed"),
            ("follow_up_conducted", "closed"),
        ])
    );

    // §10.2: eligible again in October — the case manager re-opens it
    // (D-14, risk now medium) and the supervisor approves: the same case
    // and code, back on the worker's phone, reassessment due in 3 days.
    let mut reopening = fixture("bt.case_reopening");
    reopening["header"]["case_no"] = json!(code);
    reopening["header"]["date_reopened"] = json!("2026-10-05");
    reopening["reason"]["reopen_risk_level"] = json!("medium");
    submit(&worker, "bt.case_reopening", &case_id, reopening);
    let case = get(&case_id);
    assert_state(&case, "reopening_awaiting_approval");
    approve_at(
        &app,
        &staff.coordinator,
        &case_id,
        "reopening",
        "2026-10-06T10:00:00+06:00",
    );
    let case = get(&case_id);
    assert_state(&case, "reopened");
    assert!(case["closed_at"].is_null());
    assert_eq!(case["number"], code);
    assert_open(&case, "BT-2-reopen", 1, "2026-10-09T17:59:59Z");
    let sync = app.get("/api/v1/sync", &staff.worker);
    assert!(sync.body["cases"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["id"] == case_id.as_str()));
}

// ---------------------------------------------------------------------------
// 3. BT: low risk, registration to closure
// ---------------------------------------------------------------------------

#[test]
fn bt_low_risk_case_runs_on_the_low_risk_limits() {
    let app = TestApp::spawn();
    let staff = bt_staff(&app);
    let worker = phone_for(&app, &staff.worker, "bt");
    let get = |id: &str| app.case(&staff.coordinator, id);
    let case_id = uuid::Uuid::new_v4().to_string();

    // D-04 on Monday 6 July 2026, initial risk LOW: assessment within a
    // week (§8.2): Monday 13 July.
    submit(
        &worker,
        "bt.registration",
        &case_id,
        bt_registration("2026-07-06", "low"),
    );
    let case = get(&case_id);
    assert_state(&case, "registered");
    let code = case["number"].as_str().unwrap();
    assert!(is_bt_case_code(code), "{code}");
    assert_eq!(code, "001-0607-26-NCWC-KA");
    assert_open(&case, "BT-2", 1, "2026-07-13T17:59:59Z");

    // The assessment on Wednesday 15 July is two days late: missed, met
    // late (indicator A1); risk low. Case plan within 2 weeks: 29 July.
    submit(
        &worker,
        "bt.assessment",
        &case_id,
        bt_assessment("2026-07-15", "low"),
    );
    let case = get(&case_id);
    assert_state(&case, "assessed");
    assert_deadline(&case, "BT-2", 1, "2026-07-13T17:59:59Z", "met_late");
    assert_open(&case, "BT-3", 1, "2026-07-29T17:59:59Z");

    // The plan on Friday 24 July, in time.
    submit(
        &worker,
        "bt.case_plan",
        &case_id,
        bt_case_plan("2026-07-24", "2026-10-23"),
    );
    let case = get(&case_id);
    assert_state(&case, "plan_awaiting_approval");
    assert_deadline(&case, "BT-3", 1, "2026-07-29T17:59:59Z", "met_on_time");

    // Approved Monday 27 July: follow-ups every 2 weeks (10 August), a
    // review every 3 months (27 October).
    approve_at(
        &app,
        &staff.coordinator,
        &case_id,
        "case_plan",
        "2026-07-27T10:00:00+06:00",
    );
    let case = get(&case_id);
    assert_state(&case, "in_implementation");
    assert_open(&case, "BT-5a", 1, "2026-08-10T17:59:59Z");
    assert_open(&case, "BT-5b", 1, "2026-10-27T17:59:59Z");

    // Follow-up on the due day, 10 August: on time (a date meets a
    // deadline due that day). The next by 24 August.
    submit(
        &worker,
        "bt.follow_up",
        &case_id,
        bt_follow_up("2026-08-10", false),
    );
    let case = get(&case_id);
    assert_deadline(&case, "BT-5a", 1, "2026-08-10T17:59:59Z", "met_on_time");
    assert_open(&case, "BT-5a", 2, "2026-08-24T17:59:59Z");

    // 26 August: two days late. The next by 9 September.
    submit(
        &worker,
        "bt.follow_up",
        &case_id,
        bt_follow_up("2026-08-26", false),
    );
    let case = get(&case_id);
    assert_deadline(&case, "BT-5a", 2, "2026-08-24T17:59:59Z", "met_late");
    assert_open(&case, "BT-5a", 3, "2026-09-09T17:59:59Z");

    // 8 September: in time. The next by 22 September.
    submit(
        &worker,
        "bt.follow_up",
        &case_id,
        bt_follow_up("2026-09-08", false),
    );
    let case = get(&case_id);
    assert_deadline(&case, "BT-5a", 3, "2026-09-09T17:59:59Z", "met_on_time");
    assert_open(&case, "BT-5a", 4, "2026-09-22T17:59:59Z");

    // Review on 15 September, well within the 3 months; closure proposed.
    // The next review 3 months after it: 15 December.
    submit(
        &worker,
        "bt.review",
        &case_id,
        bt_review_recommending_closure("2026-09-15"),
    );
    let case = get(&case_id);
    assert_state(&case, "closure_proposed");
    assert_deadline(&case, "BT-5b", 1, "2026-10-27T17:59:59Z", "met_on_time");
    assert_open(&case, "BT-5b", 2, "2026-12-15T17:59:59Z");

    // Closure on 16 September, approved on 17 September: closed; what was
    // open ends as not applicable; final follow-up by 17 December.
    submit(
        &worker,
        "bt.case_closure",
        &case_id,
        bt_closure("2026-09-16", "2026-12-10"),
    );
    assert_state(&get(&case_id), "closure_awaiting_approval");
    approve_at(
        &app,
        &staff.coordinator,
        &case_id,
        "closure",
        "2026-09-17T09:00:00+06:00",
    );
    let case = get(&case_id);
    assert_state(&case, "closed");
    assert_deadline(&case, "BT-5a", 4, "2026-09-22T17:59:59Z", "not_applicable");
    assert_deadline(&case, "BT-5b", 2, "2026-12-15T17:59:59Z", "not_applicable");
    assert_open(&case, "BT-6f", 1, "2026-12-17T17:59:59Z");
}

/// A temporary placement (KZ §8.4) starting on `day` in `arrangement`.
fn kz_temporary_placement(day: &str, arrangement: &str) -> Value {
    let mut data = fixture("kz.temporary_placement");
    let placement = data["placement"].as_object_mut().unwrap();
    placement.insert("placement_type".into(), json!(arrangement));
    placement.insert("start_date".into(), json!(day));
    placement.remove("end_date");
    placement.remove("end_reason");
    if arrangement == "cam_csc_temporary_residential_unit" {
        let unit = data["cam_unit"].as_object_mut().unwrap();
        unit.insert("max_end".into(), json!("2027-02-21"));
        unit.remove("monthly_reviews");
        unit.remove("family_based_care_recommended_at");
    } else {
        data.as_object_mut().unwrap().remove("cam_unit");
        data["principles"]
            .as_object_mut()
            .unwrap()
            .remove("residential_justification");
    }
    data
}

/// #15 item 3, KZ: the monthly placement review (D12) applies while the
/// child is in the CAM/CSC temporary residential unit. A review already
/// overdue when the child moves to family-based care stays overdue until it
/// is held; the 3-month limit on the stay (D13), not yet due, no longer
/// applies.
#[test]
fn kz_an_overdue_placement_review_stays_overdue_when_the_child_moves() {
    let app = TestApp::spawn();
    let staff = kz_staff(&app);
    let worker = phone(&app, &staff.worker);
    let get = |id: &str| app.case(&staff.coordinator, id);
    let case_id = open_kz_case(&worker);

    // In the unit from Saturday 21 November (a date): the first monthly
    // review by 21 December, end of day in Almaty (UTC+5); the stay ends
    // within 3 months, by 21 February.
    submit(
        &worker,
        "kz.temporary_placement",
        &case_id,
        kz_temporary_placement("2026-11-21", "cam_csc_temporary_residential_unit"),
    );
    let case = get(&case_id);
    assert_open(&case, "D12", 1, "2026-12-21T18:59:59Z");
    assert_open(&case, "D13", 1, "2027-02-21T18:59:59Z");

    // Monday 28 December, the review a week overdue: family-based care.
    submit(
        &worker,
        "kz.temporary_placement",
        &case_id,
        kz_temporary_placement("2026-12-28", "family_based_temporary_care"),
    );
    let case = get(&case_id);
    assert_eq!(
        case["facts"]["care_arrangement"],
        "family_based_temporary_care"
    );
    let d12 = deadline(&case, "D12", 1);
    assert_eq!(d12["due_at"], "2026-12-21T18:59:59Z", "{d12:#}");
    assert_eq!(d12["due_local"], "2026-12-21T23:59:59+05:00", "{d12:#}");
    assert!(d12["ended_at"].is_null(), "still open: {d12:#}");
    assert_deadline(&case, "D13", 1, "2027-02-21T18:59:59Z", "not_applicable");
}

/// D-10 review on `day` that changes the risk level to `risk` and keeps
/// the case in implementation (no reassessment, no plan change, no
/// closure).
fn bt_review_changing_risk(day: &str, risk: &str, next_review: &str) -> Value {
    let mut data = bt_review_recommending_closure(day);
    data["next_steps"] = json!({
        "reassessment_needed": "no",
        "plan_adjustment_needed": "no",
        "risk_level_changed": "yes",
        "new_risk_level": risk,
        "new_risk_level_details": "The grandmother has moved in; daily supervision.",
        "recommend_closure": "no",
        "next_review_needed": "yes",
        "next_review_date": next_review
    });
    data
}

/// #15 item 3 (SOP §8.2): a review that lowers the risk level changes the
/// follow-up frequency from then on; a follow-up already overdue keeps its
/// due time and stays on the overdue list until it is done. #15 item 4:
/// date-only answers are late by days.
#[test]
fn bt_a_lower_risk_level_does_not_re_time_an_overdue_follow_up() {
    let app = TestApp::spawn();
    let staff = bt_staff(&app);
    let worker = phone_for(&app, &staff.worker, "bt");
    let get = |id: &str| app.case(&staff.coordinator, id);
    let case_id = uuid::Uuid::new_v4().to_string();

    // As in the high-risk walkthrough: follow-ups every 84 h from the plan
    // approved Friday 5 June; the follow-up of Monday 15 June (a date:
    // 00:00 in Thimphu) starts the next, due Thursday 18 June 12:00 local,
    // 06:00 UTC.
    submit(
        &worker,
        "bt.registration",
        &case_id,
        bt_registration("2026-06-01", "high"),
    );
    submit(
        &worker,
        "bt.assessment",
        &case_id,
        bt_assessment("2026-06-01", "high"),
    );
    submit(
        &worker,
        "bt.case_plan",
        &case_id,
        bt_case_plan("2026-06-04", "2026-07-03"),
    );
    approve_at(
        &app,
        &staff.coordinator,
        &case_id,
        "case_plan",
        "2026-06-05T10:00:00+06:00",
    );
    for day in ["2026-06-08", "2026-06-11", "2026-06-15"] {
        submit(&worker, "bt.follow_up", &case_id, bt_follow_up(day, false));
    }
    assert_open(&get(&case_id), "BT-5a", 4, "2026-06-18T06:00:00Z");

    // Friday 19 June, a day after that follow-up was due: the review lowers
    // the risk to medium (every 7 days). The overdue follow-up is not
    // re-timed to 22 June (15 June + 7 days): still due the 18th, overdue.
    submit(
        &worker,
        "bt.review",
        &case_id,
        bt_review_changing_risk("2026-06-19", "medium", "2026-08-19"),
    );
    let case = get(&case_id);
    assert_state(&case, "in_implementation");
    assert_eq!(case["facts"]["risk_level"], "medium");
    let fourth = deadline(&case, "BT-5a", 4);
    assert_eq!(fourth["due_at"], "2026-06-18T06:00:00Z", "{fourth:#}");
    assert_eq!(
        fourth["due_local"], "2026-06-18T12:00:00+06:00",
        "{fourth:#}"
    );
    assert_eq!(fourth["status"], "overdue", "{fourth:#}");
    // An 84-hour limit: late in hours.
    assert!(
        fourth["late"]["hours"].as_f64().unwrap() > 24.0,
        "{fourth:#}"
    );
    // The review met the monthly review (high: 5 July); the next is read
    // at the new level, every 2 months: 19 August.
    assert_deadline(&case, "BT-5b", 1, "2026-07-05T17:59:59Z", "met_on_time");
    assert_open(&case, "BT-5b", 2, "2026-08-19T17:59:59Z");
    // It stays on the morning list, with the site named by its code.
    let list = app.get(
        "/api/v1/deadlines?status=overdue&site=BT-NCWC&assignee=karma",
        &staff.coordinator,
    );
    assert_eq!(list.status, 200, "{}", list.text);
    assert!(
        list.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["case_id"] == case_id.as_str()
                && d["rule"] == "BT-5a"
                && d["due_at"] == "2026-06-18T06:00:00Z"
                && d["due_local"] == "2026-06-18T12:00:00+06:00"
                && d["late"]["hours"].as_f64().is_some()),
        "{:#}",
        list.body
    );

    // Saturday 20 June (a date): the overdue follow-up is met, 2 days after
    // its due day; the next runs at medium from that day: 27 June.
    submit(
        &worker,
        "bt.follow_up",
        &case_id,
        bt_follow_up("2026-06-20", false),
    );
    let case = get(&case_id);
    assert_deadline(&case, "BT-5a", 4, "2026-06-18T06:00:00Z", "met_late");
    assert_eq!(deadline(&case, "BT-5a", 4)["late"], json!({"days": 2}));
    assert_open(&case, "BT-5a", 5, "2026-06-27T17:59:59Z");
}

/// #15 item 4: a plan dated the day after its due day is one day late
/// (not "0 h"); the timeliness indicator reports it in days.
#[test]
fn bt_a_date_only_answer_is_late_by_whole_days() {
    let app = TestApp::spawn();
    let staff = bt_staff(&app);
    let worker = phone_for(&app, &staff.worker, "bt");
    let get = |id: &str| app.case(&staff.coordinator, id);
    let case_id = uuid::Uuid::new_v4().to_string();

    // Low risk, registered Monday 6 July: assessment due Monday 13 July;
    // the D-05 dated Tuesday 14 July is one day late; with a time it would
    // be 00:00:01 after the due second — the day is what counts.
    submit(
        &worker,
        "bt.registration",
        &case_id,
        bt_registration("2026-07-06", "low"),
    );
    submit(
        &worker,
        "bt.assessment",
        &case_id,
        bt_assessment("2026-07-14", "low"),
    );
    let case = get(&case_id);
    assert_deadline(&case, "BT-2", 1, "2026-07-13T17:59:59Z", "met_late");
    assert_eq!(deadline(&case, "BT-2", 1)["late"], json!({"days": 1}));
    // Plan due 14 days after the assessment: 28 July; dated the 30th: 2 days.
    submit(
        &worker,
        "bt.case_plan",
        &case_id,
        bt_case_plan("2026-07-30", "2026-10-30"),
    );
    let case = get(&case_id);
    assert_deadline(&case, "BT-3", 1, "2026-07-28T17:59:59Z", "met_late");
    assert_eq!(deadline(&case, "BT-3", 1)["late"], json!({"days": 2}));

    let report = app.get(
        "/api/v1/indicators/bt?from=2026-07-01&to=2026-07-31&format=json",
        &staff.coordinator,
    );
    assert_eq!(report.status, 200, "{}", report.text);
    let row = |id: &str| {
        report.body["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["indicator"] == id)
            .unwrap_or_else(|| panic!("no {id} in {:#}", report.body))
            .clone()
    };
    for (id, days) in [("T-BT-2", 1), ("T-BT-3", 2)] {
        let r = row(id);
        assert_eq!(r["median_delay_days"], days, "{r:#}");
        assert!(r["median_delay_hours"].is_null(), "{r:#}");
        assert_eq!(r["numerator"], 0, "{r:#}");
        assert_eq!(r["denominator"], 1, "{r:#}");
    }
}

/// Every order of `n` items (Heap's algorithm, iteratively), each passed
/// to `visit`.
fn each_order(n: usize, mut visit: impl FnMut(&[usize])) {
    let mut order: Vec<usize> = (0..n).collect();
    let mut c = vec![0; n];
    visit(&order);
    let mut i = 0;
    while i < n {
        if c[i] < i {
            order.swap(if i % 2 == 0 { 0 } else { c[i] }, i);
            visit(&order);
            c[i] += 1;
            i = 0;
        } else {
            c[i] = 0;
            i += 1;
        }
    }
}

/// All 5,040 arrival orders of the seven forms of the KZ walkthrough
/// (#15 item 2), through the fold with the shipped rules and calendar: one
/// case, its state, facts and every deadline verdict. (Over HTTP the forms
/// before the referral are held until it arrives: the test after this.)
#[test]
fn every_arrival_order_of_seven_kz_forms_folds_to_one_case() {
    use casesync::cases::fold::{self, TimelineEvent};
    use casesync::cases::timeline::SubmissionEvent;
    use casesync::forms::{check, definitions};
    use casesync::programmes::Programmes;

    let set = definitions::shipped();
    let kz = Programmes::shipped().get("kz").unwrap().clone();
    let completed = chrono::DateTime::parse_from_rfc3339("2027-04-01T09:00:00+05:00").unwrap();
    let events: Vec<TimelineEvent> = KZ_SEVEN
        .iter()
        .enumerate()
        .map(|(i, (form_id, data))| {
            let data = data();
            let file = set
                .forms
                .iter()
                .find(|f| f.document["x-form"]["id"] == *form_id)
                .unwrap();
            let form = check::check(&file.document, &set.resources).unwrap();
            assert!(
                form.validate(&data).is_empty(),
                "{form_id} fixture is valid"
            );
            let event = SubmissionEvent::of(&form, &data, completed);
            TimelineEvent {
                id: format!("event-{i}"),
                name: event.name,
                occurred_at: kz.calendar.moment(&json!(event.occurred_at)).unwrap(),
                facts: event.facts.into_iter().collect(),
            }
        })
        .collect();

    let expected = fold::fold(&kz, &kz.calendar, &mut events.clone());
    assert!(
        expected.deadlines.len() > 5,
        "the walkthrough starts deadlines: {:#?}",
        expected.deadlines
    );
    let mut seen = 0;
    each_order(events.len(), |order| {
        let mut shuffled: Vec<TimelineEvent> = order.iter().map(|&i| events[i].clone()).collect();
        assert_eq!(
            fold::fold(&kz, &kz.calendar, &mut shuffled),
            expected,
            "{order:?}"
        );
        seen += 1;
    });
    assert_eq!(seen, 5040);
}

/// 20 of those 5,040 orders sent one by one over HTTP (#15 item 2): a form
/// sent before the referral is held (201 `pending_case`) and joins the
/// case when the referral arrives. Every case equals the one sent in order.
#[test]
fn twenty_arrival_orders_of_seven_kz_forms_over_http_give_the_in_order_case() {
    let app = TestApp::spawn();
    let staff = kz_staff(&app);
    let worker = phone(&app, &staff.worker);
    let mut orders = Vec::new();
    each_order(KZ_SEVEN.len(), |order| orders.push(order.to_vec()));
    // Every 252nd of the 5,040 (a spread), the in-order one first and the
    // reversed one (the referral last) among them.
    let mut sample: Vec<Vec<usize>> = orders.iter().step_by(252).take(19).cloned().collect();
    sample.push((0..KZ_SEVEN.len()).rev().collect());
    assert_eq!(sample[0], (0..KZ_SEVEN.len()).collect::<Vec<_>>());
    assert_eq!(sample.len(), 20);

    let mut expected = None;
    for order in &sample {
        let case_id = uuid::Uuid::new_v4().to_string();
        let referral_at = order.iter().position(|&i| i == 0).unwrap();
        for (sent, &i) in order.iter().enumerate() {
            let (form_id, data) = KZ_SEVEN[i];
            let res = worker.send(&form_envelope(form_id, &case_id, data()));
            assert_eq!(res.status, 201, "{form_id} in {order:?}: {}", res.text);
            if sent < referral_at {
                assert_eq!(res.body["status"], "pending_case", "{order:?}");
            } else {
                assert_ne!(res.body["status"], "pending_case", "{order:?}");
            }
        }
        let case = app.case(&staff.coordinator, &case_id);
        // The timeline in fold order, with the state after each event.
        let events = timeline_of(&app, &staff.coordinator, &case_id);
        let outcome = json!({ "case": comparable(&case), "timeline": events });
        match &expected {
            None => expected = Some(outcome),
            Some(expected) => assert_eq!(&outcome, expected, "arrival order {order:?}"),
        }
    }
    // The in-order case is the walkthrough's: the IA met on time (D7), and
    // its timeline holds the seven forms.
    let expected = expected.unwrap();
    assert!(
        expected["timeline"].as_array().unwrap().len() >= 7,
        "{expected:#}"
    );
    assert!(
        expected["case"]["deadlines"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["rule"] == "D7" && d["status"] == "met_on_time"),
        "{expected:#}"
    );
}
