//! The case fold at scale (#5): 100,000 KZ cases of 15 events each folded
//! from scratch with the shipped rules and calendar (what a rules or
//! calendar change costs), and reconciling one new submission into a
//! stored 14-event case on SQLite (what every submission costs), p50/p99.
//!
//! `cargo bench --bench fold` (CASES=… to change the count)

mod common;

use std::time::{Duration, Instant};

use casesync::cases::fold::{self, TimelineEvent};
use casesync::cases::reconcile;
use casesync::cases::timeline::{self, NewEvent, SubmissionEvent, SUBMISSION};
use casesync::cases::{self as cases_mod, children::Identity, Opening};
use casesync::db::write_tx;
use casesync::error::AppError;
use casesync::programmes::{Moment, Programmes};
use chrono::{DateTime, Duration as Days, Utc};
use common::{bench_db, BenchDb};
use serde_json::{json, Map, Value};

/// One case's timeline: referral, assignment, intake, initial assessment
/// (c), social assessment (e), care plan, approval, then eight reviews.
fn timeline_of(
    case: usize,
    start: DateTime<Utc>,
) -> Vec<(String, DateTime<Utc>, Map<String, Value>)> {
    let facts = |v: Value| v.as_object().cloned().unwrap_or_default();
    let day = |n: i64| start + Days::days(n) + Days::minutes((case % 600) as i64);
    let mut events = vec![
        (
            "referral_received",
            day(0),
            facts(
                json!({"referral.immediate_risk": case % 3 == 0, "referral.received_at": day(0).to_rfc3339()}),
            ),
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
        (
            "social_assessment_completed",
            day(40 + (case % 30) as i64),
            facts(json!({"kz.sa_conclusion": "e_removal_alternative_care"})),
        ),
        (
            "care_plan_developed",
            day(80),
            facts(json!({"kz.care_plan_date": day(80).format("%Y-%m-%d").to_string()})),
        ),
        ("care_plan_approved", day(82), Map::new()),
    ];
    for review in 0..8 {
        events.push((
            "care_plan_review_held",
            day(100 + review * (80 + (case % 20) as i64)),
            facts(json!({"kz.care_plan_review_decision": "a_continue"})),
        ));
    }
    events
        .into_iter()
        .map(|(name, at, facts)| (name.to_string(), at, facts))
        .collect()
}

fn fold_input(case: usize, start: DateTime<Utc>) -> Vec<TimelineEvent> {
    timeline_of(case, start)
        .into_iter()
        .enumerate()
        .map(|(i, (name, at, facts))| TimelineEvent {
            id: format!("{case}-{i:02}"),
            name,
            occurred_at: Moment::instant(at),
            facts: facts.into_iter().collect(),
        })
        .collect()
}

fn full_recomputation(count: usize) {
    let programmes = Programmes::shipped();
    let kz = programmes.get("kz").unwrap().clone();
    let start: DateTime<Utc> = "2026-01-05T04:00:00Z".parse().unwrap();
    let mut timelines: Vec<Vec<TimelineEvent>> = (0..count).map(|c| fold_input(c, start)).collect();
    let events: usize = timelines.iter().map(Vec::len).sum();

    let began = Instant::now();
    let mut deadlines = 0;
    for t in timelines.iter_mut() {
        deadlines += fold::fold(&kz, &kz.calendar, t).deadlines.len();
    }
    let one = began.elapsed();

    let began = Instant::now();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let per = count.div_ceil(threads);
    std::thread::scope(|s| {
        for chunk in timelines.chunks_mut(per) {
            let kz = kz.clone();
            s.spawn(move || {
                for t in chunk {
                    fold::fold(&kz, &kz.calendar, t);
                }
            });
        }
    });
    let all = began.elapsed();
    println!(
        "fold: {count} cases, {events} events, {deadlines} deadlines: {:.2} s on one core ({:.1} µs/case), {:.2} s on {threads} threads",
        one.as_secs_f64(),
        one.as_secs_f64() * 1e6 / count as f64,
        all.as_secs_f64()
    );
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Reconciles a 15th submission into stored 14-event cases on SQLite.
fn reconcile_one(samples: usize) {
    let BenchDb {
        dir: _dir,
        mut conn,
        site,
        who,
        ..
    } = bench_db();
    let programmes = Programmes::shipped();
    let kz = programmes.get("kz").unwrap().clone();
    let start: DateTime<Utc> = "2026-01-05T04:00:00Z".parse().unwrap();
    let mut inside = Vec::with_capacity(samples);
    let mut committed = Vec::with_capacity(samples);
    for c in 0..samples {
        let events = timeline_of(c, start);
        let case_id = uuid::Uuid::new_v4().to_string();
        write_tx(&mut conn, |conn| {
            cases_mod::open(
                conn,
                Opening {
                    id: &case_id,
                    programme: &kz,
                    site: &site,
                    by: &who,
                    by_display_name: "Bench Worker",
                    by_initials: None,
                    instance_id: &format!("{case_id}-00"),
                    occurred_at: events[0].1,
                    identity: Identity::default(),
                },
            )?;
            for (i, (name, at, facts)) in events.iter().take(14).enumerate() {
                timeline::record(
                    conn,
                    &kz.calendar,
                    &case_id,
                    i as i64 + 1,
                    NewEvent {
                        id: &format!("{case_id}-{i:02}"),
                        name,
                        kind: SUBMISSION,
                        occurred_at: &at.to_rfc3339(),
                        recorded_by: &who.user_id,
                        base_version: None,
                        facts,
                        detail: None,
                    },
                )?;
            }
            Ok::<_, AppError>(())
        })
        .unwrap();
        let (name, at, facts) = &events[14];
        let event = SubmissionEvent {
            name: name.clone(),
            occurred_at: at.to_rfc3339(),
            facts: facts.clone(),
        };
        let instance = format!("{case_id}-14");
        let began = Instant::now();
        write_tx(&mut conn, |conn| {
            let case = reconcile::submission(
                conn,
                &case_id,
                15,
                reconcile::Stored {
                    instance_id: &instance,
                    event: &event,
                    by: &who.user_id,
                    base_version: Some(14),
                    supersedes: None,
                },
            )?;
            inside.push(began.elapsed());
            Ok::<_, AppError>(case)
        })
        .unwrap();
        committed.push(began.elapsed());
    }
    inside.sort();
    committed.sort();
    println!(
        "reconcile one submission into a 14-event case (SQLite, {samples} samples): p50 {:.2} ms, p99 {:.2} ms inside the transaction; p50 {:.2} ms, p99 {:.2} ms with the commit (synchronous=FULL, fsync)",
        quantile(&inside, 0.5).as_secs_f64() * 1e3,
        quantile(&inside, 0.99).as_secs_f64() * 1e3,
        quantile(&committed, 0.5).as_secs_f64() * 1e3,
        quantile(&committed, 0.99).as_secs_f64() * 1e3,
    );
}

fn main() {
    // `cargo test --benches` runs benches with --bench absent: keep it short.
    let quick = !std::env::args().any(|a| a == "--bench");
    let count = std::env::var("CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(if quick { 1_000 } else { 100_000 });
    full_recomputation(count);
    reconcile_one(if quick { 50 } else { 2_000 });
}
