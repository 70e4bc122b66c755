//! Retention of closed case files: until when each closed case must be
//! kept, by the programme's `retention` rules (KZ 8.5.5 / §3.5 F7: the
//! child's 18th birthday; BT: the D-11 retain-until date), and whether it
//! is now due for archiving. This module only reads: nothing here deletes
//! or changes a case. Any future purge must ask [`may_purge`] first.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Utc};
use diesel::prelude::*;
use serde::Serialize;
use serde_json::Value;

use crate::auth::sites;
use crate::cases::Case;
use crate::db::schema::cases;
use crate::db::DbConnection;
use crate::error::{AppError, AppResult};
use crate::programmes::retention::{Retention, Until};
use crate::programmes::{Programme, Programmes};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = RetentionStatus)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Before the retain-until date.
    Keep,
    /// On or after it: to be handed over as the programme says.
    DueForArchiving,
    /// No date can be worked out: kept, and the basis says why.
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Keep => "keep",
            Status::DueForArchiving => "due_for_archiving",
            Status::Unknown => "unknown",
        }
    }
}

/// What the rules say of one closed case on one day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Assessment {
    pub retain_until: Option<NaiveDate>,
    pub basis: String,
    pub status: Status,
}

/// The day a child born on `born` turns `years`. Someone born on 29
/// February turns it on 1 March in a common year: the later day, so a file
/// is never released early.
pub fn birthday(born: NaiveDate, years: u32) -> Option<NaiveDate> {
    let year = born.year().checked_add(i32::try_from(years).ok()?)?;
    NaiveDate::from_ymd_opt(year, born.month(), born.day())
        .or_else(|| NaiveDate::from_ymd_opt(year, 3, 1))
}

/// A date fact's value, if it is a date (`"unknown"` and anything else: no).
fn date_fact(facts: &BTreeMap<String, Value>, fact: &str) -> Option<NaiveDate> {
    facts
        .get(fact)
        .and_then(Value::as_str)
        .and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
}

/// Applies `retention` to a case closed on `closed_on` with `facts`, as of
/// `today`. Pure: no database, no clock.
pub fn assess(
    retention: Option<&Retention>,
    facts: &BTreeMap<String, Value>,
    closed_on: NaiveDate,
    today: NaiveDate,
) -> Assessment {
    let Some(retention) = retention else {
        return Assessment {
            retain_until: None,
            basis: "no retention rule for this programme; kept".into(),
            status: Status::Unknown,
        };
    };
    for rule in &retention.rules {
        let until = match &rule.until {
            Until::Birthday { fact, years } => {
                date_fact(facts, fact).and_then(|born| birthday(born, *years))
            }
            Until::Date { fact } => date_fact(facts, fact),
        };
        let Some(mut until) = until else { continue };
        let mut basis = rule.basis.clone();
        if rule.not_before_closure && until < closed_on {
            until = closed_on;
            basis.push_str(" (closed later: closure day)");
        }
        let status = if today < until {
            Status::Keep
        } else {
            Status::DueForArchiving
        };
        return Assessment {
            retain_until: Some(until),
            basis,
            status,
        };
    }
    Assessment {
        retain_until: None,
        basis: retention.unknown.clone(),
        status: Status::Unknown,
    }
}

/// A case whose file retention applies to: closed (a closed state and a
/// closure time) and not merged into another case (its file lives on there).
fn closed_on(programme: &Programme, case: &Case) -> Option<NaiveDate> {
    let closed_at = case.closed_at?;
    if case.merged_into.is_some() || !programme.is_closed_state(&case.state) {
        return None;
    }
    Some(programme.calendar.local_date(closed_at.and_utc()))
}

/// The day `case` closed and what the rules say of it on `today`; `None`
/// when it is not closed.
fn assess_closed(
    programme: &Programme,
    case: &Case,
    today: NaiveDate,
) -> Option<(NaiveDate, Assessment)> {
    let closed_on = closed_on(programme, case)?;
    let facts: BTreeMap<String, Value> = serde_json::from_str(&case.facts).unwrap_or_default();
    let assessment = assess(programme.retention.as_ref(), &facts, closed_on, today);
    Some((closed_on, assessment))
}

/// What the rules say of `case` on `today`; `None` when it is not closed.
pub fn assess_case(programme: &Programme, case: &Case, today: NaiveDate) -> Option<Assessment> {
    assess_closed(programme, case, today).map(|(_, a)| a)
}

/// The one gate for any purge of a case file, now or later: true only for
/// a closed case whose retain-until date has been reached. False for an
/// open or merged case, before the date, and when the date is unknown.
pub fn may_purge(case: &Case, today: NaiveDate) -> bool {
    let shipped = Programmes::shipped();
    let Some(programme) = shipped.get(&case.programme) else {
        return false;
    };
    assess_case(programme, case, today).is_some_and(|a| a.status == Status::DueForArchiving)
}

/// Which closed cases a report covers.
#[derive(Debug, Clone, Default)]
pub struct ReportQuery {
    /// One programme, or all.
    pub programme: Option<String>,
    /// Only these sites (a coordinator's); `None`: every site (the shell).
    pub site_ids: Option<Vec<String>>,
    /// The day to judge on; default: today in each programme's time zone.
    pub as_of: Option<NaiveDate>,
}

/// The JSON report as [`write_json`] streams it.
#[derive(utoipa::ToSchema)]
pub struct Report {
    pub items: Vec<Entry>,
    pub summary: Summary,
}

/// One line of the report: case numbers only, never names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Entry {
    pub case_id: String,
    pub case_number: String,
    pub programme: String,
    pub site_code: String,
    pub closed_on: NaiveDate,
    pub retain_until: Option<NaiveDate>,
    pub basis: String,
    pub status: Status,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Summary {
    pub kept: u64,
    pub due: u64,
    pub unknown: u64,
}

impl Summary {
    fn count(&mut self, status: Status) {
        match status {
            Status::Keep => self.kept += 1,
            Status::DueForArchiving => self.due += 1,
            Status::Unknown => self.unknown += 1,
        }
    }

    pub fn line(&self) -> String {
        format!(
            "{} kept, {} due for archiving, {} unknown (kept)",
            self.kept, self.due, self.unknown
        )
    }
}

pub const CSV_HEADER: [&str; 7] = [
    "case_number",
    "programme",
    "site_code",
    "closed_on",
    "retain_until",
    "basis",
    "status",
];

const PAGE: i64 = 500;

/// The programmes a query covers, checked.
fn programmes_of(query: &ReportQuery) -> AppResult<Vec<std::sync::Arc<Programme>>> {
    let shipped = Programmes::shipped();
    match &query.programme {
        Some(id) => shipped
            .get(id)
            .cloned()
            .map(|p| vec![p])
            .ok_or_else(|| AppError::invalid_field("/programme", "kz or bt")),
        None => {
            let mut ids: Vec<&str> = shipped.ids().collect();
            ids.sort_unstable();
            Ok(ids
                .iter()
                .filter_map(|id| shipped.get(id).cloned())
                .collect())
        }
    }
}

/// Walks the closed cases of `query`, a page at a time (by programme, then
/// creation; keyset, so memory stays flat), handing each page's entries to
/// `on_page`; stops early when it returns false.
pub fn pages(
    conn: &mut DbConnection,
    query: &ReportQuery,
    now: DateTime<Utc>,
    mut on_page: impl FnMut(Vec<Entry>) -> AppResult<bool>,
) -> AppResult<Summary> {
    let programmes = programmes_of(query)?;
    let site_codes: HashMap<String, String> = sites::list(conn, query.site_ids.as_deref())?
        .into_iter()
        .map(|s| (s.id, s.code))
        .collect();
    let mut summary = Summary::default();
    for programme in programmes {
        let today = query
            .as_of
            .unwrap_or_else(|| programme.calendar.local_date(now));
        let closed_states: Vec<String> = programme
            .states
            .iter()
            .filter(|s| s.closed)
            .map(|s| s.id.clone())
            .collect();
        let mut after: Option<(NaiveDateTime, String)> = None;
        loop {
            let mut q = cases::table
                .filter(cases::programme.eq(&programme.id))
                .filter(cases::closed_at.is_not_null())
                .filter(cases::merged_into.is_null())
                .filter(cases::state.eq_any(closed_states.clone()))
                .select(Case::as_select())
                .into_boxed();
            if let Some(ids) = &query.site_ids {
                q = q.filter(cases::site_id.eq_any(ids.clone()));
            }
            if let Some((at, id)) = &after {
                // `>=` first: a range the (programme, created_at, id) index
                // seeks to, so each page starts where the last one ended.
                q = q
                    .filter(cases::created_at.ge(*at))
                    .filter(cases::created_at.gt(*at).or(cases::id.gt(id.clone())));
            }
            let page: Vec<Case> = q
                .order((cases::created_at, cases::id))
                .limit(PAGE)
                .load(conn)?;
            let Some(last) = page.last() else { break };
            after = Some((last.created_at, last.id.clone()));
            let full = page.len() as i64 == PAGE;
            let mut entries = Vec::with_capacity(page.len());
            for case in page {
                let Some((closed_on, assessment)) = assess_closed(&programme, &case, today) else {
                    continue;
                };
                summary.count(assessment.status);
                entries.push(Entry {
                    site_code: site_codes.get(&case.site_id).cloned().unwrap_or_default(),
                    case_id: case.id,
                    case_number: case.number.unwrap_or_default(),
                    programme: case.programme,
                    closed_on,
                    retain_until: assessment.retain_until,
                    basis: assessment.basis,
                    status: assessment.status,
                });
            }
            if !on_page(entries)? {
                return Ok(summary);
            }
            if !full {
                break;
            }
        }
    }
    Ok(summary)
}

/// The report as CSV (`CSV_HEADER`), a chunk per page to `sink`, which
/// returns false to stop (the client went away).
pub fn write_csv(
    conn: &mut DbConnection,
    query: &ReportQuery,
    now: DateTime<Utc>,
    mut sink: impl FnMut(Vec<u8>) -> bool,
) -> AppResult<Summary> {
    // Case numbers, codes and dates only, but every CSV goes through the
    // one writer that neutralises formulas (`sheet`).
    use crate::sheet::{Chunk, Formulas};
    let mut head = Chunk::new(Formulas::Escaped);
    head.record(CSV_HEADER)?;
    if !sink(head.bytes()?) {
        return Ok(Summary::default());
    }
    pages(conn, query, now, |entries| {
        if entries.is_empty() {
            return Ok(true);
        }
        let mut out = Chunk::with_capacity(entries.len() * 96, Formulas::Escaped);
        for e in &entries {
            out.record([
                e.case_number.as_str(),
                e.programme.as_str(),
                e.site_code.as_str(),
                &e.closed_on.to_string(),
                &e.retain_until.map(|d| d.to_string()).unwrap_or_default(),
                e.basis.as_str(),
                e.status.as_str(),
            ])?;
        }
        Ok(sink(out.bytes()?))
    })
}

/// The report as one JSON object, `{"items": [Entry…], "summary": {…}}`,
/// streamed a page at a time like `write_csv`.
pub fn write_json(
    conn: &mut DbConnection,
    query: &ReportQuery,
    now: DateTime<Utc>,
    mut sink: impl FnMut(Vec<u8>) -> bool,
) -> AppResult<Summary> {
    if !sink(b"{\"items\":[".to_vec()) {
        return Ok(Summary::default());
    }
    let mut first = true;
    let summary = pages(conn, query, now, |entries| {
        if entries.is_empty() {
            return Ok(true);
        }
        let mut out = Vec::with_capacity(entries.len() * 192);
        for e in &entries {
            if !first {
                out.push(b',');
            }
            first = false;
            serde_json::to_writer(&mut out, e).map_err(AppError::internal)?;
        }
        Ok(sink(out))
    })?;
    let summary_json = serde_json::to_string(&summary).map_err(AppError::internal)?;
    sink(format!("],\"summary\":{summary_json}}}").into_bytes());
    Ok(summary)
}

/// Refuses a query naming a programme the server has no rules for.
pub fn check(query: &ReportQuery) -> AppResult<()> {
    programmes_of(query).map(|_| ())
}

/// What the audit log says of a report (no case content).
pub fn describe(query: &ReportQuery) -> String {
    format!(
        "programme {}, as of {}",
        query.programme.as_deref().unwrap_or("all"),
        query
            .as_of
            .map_or_else(|| "today".to_string(), |d| d.to_string())
    )
}
