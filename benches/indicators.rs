//! Indicator reports at scale (#6): CASES KZ cases (default 100,000; 2,000
//! without `--bench`) folded with the shipped rules from varied timelines
//! and stored (case rows with facts and event days, their deadlines), then
//! every KZ Table 1 indicator counted over 2025 by sex × age band — the
//! issue's target is under 1 s — and the same with the timeliness of every
//! deadline rule, and by month; then the first again without the
//! indicator projection (#19 item 4), the case rows read whole.
//!
//! `cargo bench --bench indicators`

mod common;

use std::time::Instant;

use casesync::cases::fold::{self, Folded, TimelineEvent};
use casesync::cases::projection::{self, StoredDeadline};
use casesync::db::schema::indicator_cases;
use casesync::db::schema::{case_deadlines, cases, children};
use casesync::db::write_tx;
use casesync::error::AppError;
use casesync::indicators::{self, Audience, ReportQuery};
use casesync::programmes::{Moment, Programmes};
use chrono::{DateTime, Duration, Utc};
use common::{bench_db, BenchDb};
use diesel::prelude::*;
use serde_json::{json, Map, Value};

const SEPARATION: [&str; 3] = ["separated", "unaccompanied", "with_parent_or_legal_rep"];
const NATIONALITY: [&str; 4] = [
    "kazakh_national",
    "foreign_national",
    "stateless",
    "undetermined",
];
const ETHNICITY: [&str; 5] = ["kazakh", "kyrgyz", "hazara", "korean", "german"];
const REFERRER: [&str; 4] = ["health", "ngo", "migration_services", "member_of_public"];
const OUTCOME: [&str; 5] = [
    "reunified_country_of_origin",
    "settled_in_kazakhstan",
    "remained_with_parents_after_cpp",
    "placed_with_parents_after_care_plan",
    "no_further_action",
];

fn facts(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

/// A varied KZ timeline: who the child is changes with `case`, and so do
/// the steps the case has reached (placement, assessment, plans, closure).
fn timeline(case: usize, start: DateTime<Utc>) -> Vec<TimelineEvent> {
    let day = |n: i64| start + Duration::days(n) + Duration::minutes((case % 600) as i64);
    let date = |n: i64| day(n).format("%Y-%m-%d").to_string();
    let born = 2008 + (case % 17) as i32;
    let mut events = vec![
        (
            "referral_received",
            day(0),
            facts(json!({
                "referral.immediate_risk": case % 3 == 0,
                "referral.received_at": day(0).to_rfc3339(),
                "referral.referrer_type": REFERRER[case % 4],
                "child.sex": if case % 2 == 0 { "female" } else { "male" },
                "child.date_of_birth": format!("{born}-0{}-1{}", 1 + case % 9, case % 10),
                "child.separation_status": SEPARATION[case % 3],
                "child.country_of_origin": if case % 5 < 2 { "AF" } else { "KZ" },
                "child.disability": case % 7 == 0,
                "child.ethnicity": ETHNICITY[case % 5],
                "kz.nationality_status": NATIONALITY[case % 4],
            })),
        ),
        (
            "case_assigned",
            day(0),
            facts(json!({"case.assigned_to": "worker"})),
        ),
        (
            "intake_completed",
            day(1),
            facts(json!({"kz.intake_completed_at": day(1).to_rfc3339()})),
        ),
        (
            "initial_assessment_completed",
            day(2),
            facts(json!({"kz.ia_decision": "c_reasonable_grounds_for_concern"})),
        ),
    ];
    if case % 4 == 0 {
        events.push((
            "independent_supporter_appointment_arranged",
            day(1),
            facts(json!({"kz.is_ngo_decision": "accepted"})),
        ));
    }
    if case % 3 == 1 {
        events.push((
            "temporary_placement_started",
            day(3),
            facts(json!({
                "care_arrangement": if case % 2 == 0 { "cam_csc_temporary_residential_unit" } else { "foster_carer" },
                "kz.family_tracing_started_at": day(5).to_rfc3339(),
            })),
        ));
    }
    events.push((
        "social_assessment_completed",
        day(40 + (case % 30) as i64),
        facts(
            json!({"kz.sa_conclusion": "e_removal_alternative_care", "kz.bia_bid": case % 5 < 2}),
        ),
    ));
    if case % 2 == 0 {
        events.push((
            "care_plan_developed",
            day(80),
            facts(json!({"kz.care_plan_date": date(80)})),
        ));
        events.push(("care_plan_approved", day(82), Map::new()));
        for review in 0..(case % 6) as i64 {
            events.push((
                "care_plan_review_held",
                day(100 + review * 90),
                facts(json!({"kz.care_plan_review_decision": "a_continue"})),
            ));
        }
    } else {
        events.push((
            "child_protection_plan_finalised",
            day(60),
            facts(json!({"kz.cpp_finalised_date": date(60)})),
        ));
    }
    if case % 5 == 3 {
        events.push((
            "case_closed",
            day(300),
            facts(json!({
                "kz.case_outcome": OUTCOME[case % 5],
                "closure.reason": "cpp_no_longer_necessary",
                "placement.end_date": date(290),
            })),
        ));
    }
    events
        .into_iter()
        .enumerate()
        .map(|(i, (name, at, facts))| TimelineEvent {
            id: format!("{case}-{i:02}"),
            name: name.to_string(),
            occurred_at: Moment::instant(at),
            facts: facts.into_iter().collect(),
        })
        .collect()
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let count: usize = std::env::var("CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(if quick { 2_000 } else { 100_000 });
    let BenchDb {
        dir: _dir,
        mut conn,
        site,
        ..
    } = bench_db();
    let kz = Programmes::shipped().get("kz").unwrap().clone();
    let first: DateTime<Utc> = "2024-01-03T04:00:00Z".parse().unwrap();

    let began = Instant::now();
    let mut deadlines = 0;
    for chunk in (0..count).collect::<Vec<_>>().chunks(2_000) {
        write_tx(&mut conn, |conn| {
            for &case in chunk {
                // Opened over three years; every tenth child readmitted.
                let opened = first + Duration::hours((case * 26_280 / count.max(1)) as i64);
                let mut events = timeline(case, opened);
                let folded: Folded = fold::fold(&kz, &kz.calendar, &mut events);
                let id = format!("case-{case:07}");
                let readmission = case % 10 == 9;
                let child_of = if readmission { case - 9 } else { case };
                let child = format!("child-{child_of:07}");
                let now = opened.naive_utc();
                if !readmission {
                    diesel::insert_into(children::table)
                        .values((
                            children::id.eq(&child),
                            children::programme.eq("kz"),
                            children::site_id.eq(&site.id),
                            children::created_at.eq(now),
                        ))
                        .execute(conn)?;
                }
                diesel::insert_into(cases::table)
                    .values((
                        cases::id.eq(&id),
                        cases::programme.eq("kz"),
                        cases::site_id.eq(&site.id),
                        cases::state.eq(&folded.state),
                        cases::version.eq(events.len() as i64),
                        cases::opened_by_instance.eq(&id),
                        cases::created_at.eq(now),
                        cases::updated_at.eq(now),
                        cases::child_id.eq(&child),
                        cases::number.eq(case.to_string()),
                        cases::admission.eq(i32::from(readmission)),
                        cases::facts.eq(serde_json::to_string(&folded.facts).unwrap()),
                        cases::opened_at.eq(now),
                        cases::closed_at.eq(folded.closed_at.map(|t| t.naive_utc())),
                        cases::event_days.eq(serde_json::to_string(&folded.event_days).unwrap()),
                    ))
                    .execute(conn)?;
                let mut stored = Vec::new();
                for d in &folded.deadlines {
                    let (outcome, on_time) = if d.is_open() {
                        ("open", None)
                    } else {
                        ("met", Some(d.occurrence % 3 != 0))
                    };
                    diesel::insert_into(case_deadlines::table)
                        .values((
                            case_deadlines::case_id.eq(&id),
                            case_deadlines::rule_id.eq(&d.rule),
                            case_deadlines::occurrence.eq(d.occurrence as i32),
                            case_deadlines::programme.eq("kz"),
                            case_deadlines::site_id.eq(&site.id),
                            case_deadlines::started_at.eq(d.started_at.naive_utc()),
                            case_deadlines::due_at.eq(d.due_at.naive_utc()),
                            case_deadlines::soon_at.eq(d.soon_at.naive_utc()),
                            case_deadlines::outcome.eq(outcome),
                            case_deadlines::met_at
                                .eq(on_time.map(|_| (d.due_at + Duration::hours(30)).naive_utc())),
                            case_deadlines::on_time.eq(on_time),
                        ))
                        .execute(conn)?;
                    deadlines += 1;
                    stored.push(StoredDeadline(
                        d.rule.clone(),
                        d.due_at.naive_utc(),
                        outcome.to_string(),
                        on_time.map(|_| (d.due_at + Duration::hours(30)).naive_utc()),
                        on_time,
                        false,
                    ));
                }
                // What the fold's save writes beside the case (KZ reads no
                // event one record at a time: no event rows needed).
                projection::save(conn, &kz, &id, &folded, &[], stored)?;
            }
            Ok::<_, AppError>(())
        })
        .unwrap();
    }
    println!(
        "setup: {count} cases, {deadlines} deadlines folded and stored in {:.1} s",
        began.elapsed().as_secs_f64()
    );

    let runs: [(&str, ReportQuery); 3] = [
        (
            "KZ Table 1 (22 indicators) by sex × age band, 2025",
            ReportQuery {
                by: Some("sex,age_band".into()),
                timeliness: Some(false),
                ..query()
            },
        ),
        (
            "… and the timeliness of every deadline rule",
            ReportQuery {
                by: Some("sex,age_band".into()),
                ..query()
            },
        ),
        (
            "Table 1 by month, by sex × age band",
            ReportQuery {
                by: Some("sex,age_band".into()),
                period: Some("month".into()),
                timeliness: Some(false),
                ..query()
            },
        ),
    ];
    for (what, q) in runs {
        let request = indicators::plan(&mut conn, &Audience::shell(), "kz", &q, 5).unwrap();
        let mut best = f64::MAX;
        let mut rows = 0;
        for _ in 0..3 {
            let began = Instant::now();
            rows = indicators::report(&mut conn, &request).unwrap().len();
            best = best.min(began.elapsed().as_secs_f64());
        }
        println!("{what}: {rows} rows from {count} cases in {best:.3} s (best of 3)");
    }
    // The same first report the way it was counted before #19 item 4:
    // without the projection every case row is read whole.
    diesel::delete(indicator_cases::table)
        .execute(&mut conn)
        .unwrap();
    let (what, q) = (
        "KZ Table 1 by sex × age band, 2025, from the case rows (no projection)",
        ReportQuery {
            by: Some("sex,age_band".into()),
            timeliness: Some(false),
            ..query()
        },
    );
    let request = indicators::plan(&mut conn, &Audience::shell(), "kz", &q, 5).unwrap();
    let mut best = f64::MAX;
    let mut rows = 0;
    for _ in 0..3 {
        let began = Instant::now();
        rows = indicators::report(&mut conn, &request).unwrap().len();
        best = best.min(began.elapsed().as_secs_f64());
    }
    println!("{what}: {rows} rows from {count} cases in {best:.3} s (best of 3)");
}

fn query() -> ReportQuery {
    ReportQuery {
        from: Some("2025-01-01".parse().unwrap()),
        to: Some("2025-12-31".parse().unwrap()),
        ..ReportQuery::default()
    }
}
