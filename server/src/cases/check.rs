//! The check of a database after load — several servers, one of them
//! killed mid-run (`scripts/bench-scaleout.sh`, tests/it/scaleout.rs,
//! `casesync cases check`): every submission a phone holds a receipt for
//! is stored exactly once, case numbers are unique per site and without
//! gaps, and every case agrees with a fold of its events from scratch.

use std::collections::{BTreeMap, HashMap, HashSet};

use diesel::prelude::*;

use super::{reconcile, timeline, Case};
use crate::db::schema::{case_number_counters, cases, submissions};
use crate::db::DbConnection;
use crate::error::AppResult;
use crate::programmes::holidays;

#[derive(Debug, Default)]
pub struct Report {
    /// Distinct acknowledged submissions asked about.
    pub acknowledged: usize,
    /// Submissions in the database (acknowledged or not).
    pub stored: i64,
    pub cases: usize,
    /// Case numbers checked, over how many counters (site, and for BT month).
    pub numbers: usize,
    pub counters: usize,
    /// Each thing found wrong, in words; empty when all holds.
    pub problems: Vec<String>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Runs every check; `acknowledged` are the instance ids phones hold a
/// receipt for.
pub fn run(conn: &mut DbConnection, acknowledged: &[String]) -> AppResult<Report> {
    let mut report = Report::default();
    stored_once(conn, acknowledged, &mut report)?;
    let all: Vec<Case> = cases::table
        .order(cases::id)
        .select(Case::as_select())
        .load(conn)?;
    report.cases = all.len();
    numbers(conn, &all, &mut report)?;
    let mut calendars = HashMap::new();
    for case in &all {
        let programme = reconcile::programme_of(&case.programme)?;
        if !calendars.contains_key(&case.programme) {
            let calendar = holidays::calendar(conn, &programme)?;
            calendars.insert(case.programme.clone(), calendar);
        }
        let calendar = &calendars[&case.programme];
        for difference in timeline::refold_differences(conn, &programme, calendar, case)? {
            report
                .problems
                .push(format!("case {}: {difference}", case.id));
        }
    }
    Ok(report)
}

/// Each acknowledged instance id names one stored submission (the
/// primary key makes two impossible; a lost one is what can happen).
fn stored_once(
    conn: &mut DbConnection,
    acknowledged: &[String],
    report: &mut Report,
) -> AppResult<()> {
    let distinct: HashSet<&str> = acknowledged.iter().map(String::as_str).collect();
    if distinct.len() != acknowledged.len() {
        report.problems.push(format!(
            "{} acknowledgement(s) of an instance id acknowledged before",
            acknowledged.len() - distinct.len()
        ));
    }
    report.acknowledged = distinct.len();
    report.stored = submissions::table.count().get_result(conn)?;
    let ids: Vec<&str> = distinct.into_iter().collect();
    for chunk in ids.chunks(1000) {
        let found: HashSet<String> = submissions::table
            .filter(submissions::instance_id.eq_any(chunk))
            .select(submissions::instance_id)
            .load::<String>(conn)?
            .into_iter()
            .collect();
        for id in chunk.iter().filter(|id| !found.contains(**id)) {
            report
                .problems
                .push(format!("acknowledged submission {id} is not stored"));
        }
    }
    Ok(())
}

/// Case numbers: unique per programme and site, and each counter's
/// numbers (KZ: per site, BT: per site and month, §3.5 F3 and BT §3.1)
/// run 1, 2, … up to the counter's value without a gap.
fn numbers(conn: &mut DbConnection, all: &[Case], report: &mut Report) -> AppResult<()> {
    let mut seen: HashMap<(&str, &str, &str), &str> = HashMap::new();
    let mut counted: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for case in all {
        let Some(number) = case.number.as_deref() else {
            continue;
        };
        report.numbers += 1;
        if let Some(other) = seen.insert((&case.programme, &case.site_id, number), &case.id) {
            report.problems.push(format!(
                "case number {number} of site {} is held by cases {other} and {}",
                case.site_id, case.id
            ));
        }
        if case.admission != 0 {
            // A readmission keeps the child's first number (`17.1`).
            continue;
        }
        let counted_as = match case.programme.as_str() {
            "kz" => number
                .parse::<i64>()
                .ok()
                .map(|n| (super::numbers::kz_scope(&case.site_id), n)),
            // `NNN-DDMM-YY-ORG-II`, counted per organisation code and
            // month of registration (`numbers::bt_scope`, SOP §10.2).
            _ => {
                let parts: Vec<&str> = number.split('-').collect();
                match parts.as_slice() {
                    [count, day_month, year, org, _] if day_month.len() == 4 => {
                        let registered = chrono::NaiveDate::parse_from_str(
                            &format!("20{year}-{}-{}", &day_month[2..], &day_month[..2]),
                            "%Y-%m-%d",
                        );
                        match (count.parse::<i64>(), registered) {
                            (Ok(n), Ok(day)) => Some((super::numbers::bt_scope(org, day), n)),
                            _ => None,
                        }
                    }
                    _ => None,
                }
            }
        };
        match counted_as {
            Some((scope, n)) => counted.entry(scope).or_default().push(n),
            None => report.problems.push(format!(
                "case {} has a number {number:?} that is not of its programme's pattern",
                case.id
            )),
        }
    }
    let counters: HashMap<String, i64> = case_number_counters::table
        .select((
            case_number_counters::scope,
            case_number_counters::last_value,
        ))
        .load::<(String, i64)>(conn)?
        .into_iter()
        .collect();
    report.counters = counted.len();
    for (scope, mut values) in counted {
        values.sort_unstable();
        let expected: Vec<i64> = (1..=values.len() as i64).collect();
        if values != expected {
            let missing: Vec<i64> = expected
                .iter()
                .filter(|n| values.binary_search(n).is_err())
                .copied()
                .take(10)
                .collect();
            report.problems.push(format!(
                "case numbers of {scope} are not 1..{} without gaps (missing {missing:?})",
                values.len()
            ));
        }
        match counters.get(&scope) {
            Some(&last) if last == values.len() as i64 => {}
            other => report.problems.push(format!(
                "the counter {scope} stands at {other:?} but {} case(s) hold its numbers",
                values.len()
            )),
        }
    }
    Ok(())
}
