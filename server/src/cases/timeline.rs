//! The timeline of a case: its events (submissions and staff actions) as
//! stored, and the fold that turns them into the case's state, facts and
//! deadlines. Owns `case_events` and `case_deadlines`.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, FixedOffset, NaiveDateTime};
use diesel::prelude::*;
use serde::Serialize;
use serde_json::{Map, Value};

use super::fold::{self, Deadline, Folded, Outcome, TimelineEvent};
use super::projection::StoredDeadline;
use super::Case;
use crate::db::schema::{case_deadlines, case_events, cases};
use crate::db::{write_tx, DbConnection};
use crate::error::{AppError, AppResult};
use crate::forms::model::Field;
use crate::forms::validate::CompiledForm;
use crate::programmes::{Calendar, Moment, Programme};
use crate::time::now;

pub const SUBMISSION: &str = "submission";
pub const ACTION: &str = "action";

/// What a submission adds to its case's timeline, read from its data once,
/// before the write transaction.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct SubmissionEvent {
    pub name: String,
    /// As answered: RFC 3339 date-time or a date.
    pub occurred_at: String,
    pub facts: Map<String, Value>,
}

impl SubmissionEvent {
    /// The form's event, when it happened (the form's `occurred_at` answer,
    /// else when the phone completed the form), and the facts it sets.
    pub fn of(
        form: &CompiledForm,
        data: &Value,
        completed_at: DateTime<FixedOffset>,
    ) -> SubmissionEvent {
        // An answer that is not a date ("unknown") falls back to when the
        // form was completed: a valid submission is never refused for it.
        let is_time = |text: &&str| {
            DateTime::parse_from_rfc3339(text).is_ok()
                || chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok()
        };
        let occurred_at = data
            .pointer(&form.meta.occurred_at)
            .and_then(Value::as_str)
            .filter(is_time)
            .map(str::to_string)
            .unwrap_or_else(|| completed_at.to_rfc3339());
        SubmissionEvent {
            name: form.meta.event.clone(),
            occurred_at,
            facts: facts_of(&form.fields, data),
        }
    }
}

/// The facts `data` sets: a field inside a repeat group gives the list of
/// its answers; unanswered fields set nothing.
pub fn facts_of(fields: &[Field], data: &Value) -> Map<String, Value> {
    let mut facts = Map::new();
    for field in fields {
        let Some(fact) = &field.fact else { continue };
        let values: Vec<Value> = field
            .values_in(data)
            .into_iter()
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_null())
            .collect();
        if values.is_empty() {
            continue;
        }
        let value = if field.path.contains("[]") {
            Value::Array(values)
        } else {
            values.into_iter().next().expect("not empty")
        };
        facts.insert(fact.clone(), value);
    }
    facts
}

#[derive(Debug, Clone, PartialEq, Serialize, Queryable, Selectable)]
#[diesel(table_name = case_events)]
pub struct EventRow {
    pub id: String,
    pub case_id: String,
    pub seq: i64,
    pub name: String,
    pub kind: String,
    pub occurred_at: String,
    #[serde(serialize_with = "crate::json::utc")]
    pub occurred_at_utc: NaiveDateTime,
    #[serde(serialize_with = "crate::json::utc")]
    pub recorded_at: NaiveDateTime,
    pub recorded_by: String,
    pub base_version: Option<i64>,
    pub facts: String,
    pub detail: Option<String>,
    pub superseded: bool,
}

impl EventRow {
    pub fn facts(&self) -> Map<String, Value> {
        serde_json::from_str(&self.facts).unwrap_or_default()
    }
}

pub struct NewEvent<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub kind: &'a str,
    pub occurred_at: &'a str,
    pub recorded_by: &'a str,
    pub base_version: Option<i64>,
    pub facts: &'a Map<String, Value>,
    pub detail: Option<Value>,
}

/// Appends an event to the case's timeline as version `seq` of the case.
pub fn record(
    conn: &mut DbConnection,
    calendar: &Calendar,
    case_id: &str,
    seq: i64,
    event: NewEvent,
) -> AppResult<()> {
    let moment = calendar
        .moment(&Value::String(event.occurred_at.to_string()))
        .ok_or_else(|| {
            AppError::invalid_field(
                "/occurred_at",
                "is neither a date nor an RFC 3339 date-time",
            )
        })?;
    diesel::insert_into(case_events::table)
        .values((
            case_events::id.eq(event.id),
            case_events::case_id.eq(case_id),
            case_events::seq.eq(seq),
            case_events::name.eq(event.name),
            case_events::kind.eq(event.kind),
            case_events::occurred_at.eq(event.occurred_at),
            case_events::occurred_at_utc.eq(moment.at.naive_utc()),
            case_events::recorded_at.eq(now()),
            case_events::recorded_by.eq(event.recorded_by),
            case_events::base_version.eq(event.base_version),
            case_events::facts.eq(Value::Object(event.facts.clone()).to_string()),
            case_events::detail.eq(event.detail.map(|d| d.to_string())),
        ))
        .execute(conn)?;
    Ok(())
}

/// Takes an edited submission's predecessor out of the fold (it stays in
/// the history).
pub fn supersede(conn: &mut DbConnection, event_id: &str) -> AppResult<()> {
    diesel::update(case_events::table.find(event_id))
        .set(case_events::superseded.eq(true))
        .execute(conn)?;
    Ok(())
}

/// Every event of the case in arrival order, superseded ones included.
pub fn events(conn: &mut DbConnection, case_id: &str) -> AppResult<Vec<EventRow>> {
    Ok(case_events::table
        .filter(case_events::case_id.eq(case_id))
        .order(case_events::seq)
        .select(EventRow::as_select())
        .load(conn)?)
}

/// The fold's input from stored rows: superseded events leave the fold.
pub fn fold_input(calendar: &Calendar, rows: &[EventRow]) -> Vec<TimelineEvent> {
    rows.iter()
        .filter(|r| !r.superseded)
        .map(|r| TimelineEvent {
            id: r.id.clone(),
            name: r.name.clone(),
            occurred_at: calendar
                .moment(&Value::String(r.occurred_at.clone()))
                .unwrap_or(Moment::instant(r.occurred_at_utc.and_utc())),
            facts: r.facts().into_iter().collect(),
        })
        .collect()
}

/// Folds the case again from its stored events and writes the result:
/// state, facts, closure, next due date on the case; its deadlines.
pub fn refold(
    conn: &mut DbConnection,
    programme: &Programme,
    calendar: &Calendar,
    case: &Case,
) -> AppResult<Folded> {
    let rows = events(conn, &case.id)?;
    let mut input = fold_input(calendar, &rows);
    let folded = fold::fold(programme, calendar, &mut input);
    save(conn, programme, case, &folded, &rows)?;
    Ok(folded)
}

/// The earliest open deadline of a fold: the case's `next_due_at`.
fn next_due(folded: &Folded) -> Option<NaiveDateTime> {
    folded
        .deadlines
        .iter()
        .filter(|d| d.is_open())
        .map(|d| d.due_at.naive_utc())
        .min()
}

/// A deadline as its row says it: rule, occurrence, start, due, outcome,
/// when met or ended, whether on time, the event that ended it.
type DeadlineCells = (
    String,
    i32,
    NaiveDateTime,
    NaiveDateTime,
    String,
    Option<NaiveDateTime>,
    Option<bool>,
    Option<String>,
);

/// What differs between `case` as stored and a fold of its stored events
/// from scratch (nothing, when the case never disagrees with its events):
/// the check after load (`casesync cases check`).
pub fn refold_differences(
    conn: &mut DbConnection,
    programme: &Programme,
    calendar: &Calendar,
    case: &Case,
) -> AppResult<Vec<String>> {
    let rows = events(conn, &case.id)?;
    let mut input = fold_input(calendar, &rows);
    let folded = fold::fold(programme, calendar, &mut input);
    let json = |text: &str| serde_json::from_str::<Value>(text).unwrap_or(Value::Null);
    let mut out = Vec::new();
    if case.state != folded.state {
        out.push(format!("state {} ≠ refolded {}", case.state, folded.state));
    }
    if json(&case.facts) != serde_json::to_value(&folded.facts).map_err(AppError::internal)? {
        out.push("facts differ from the refold".into());
    }
    if case.closed_at != folded.closed_at.map(|t| t.naive_utc()) {
        out.push("closed_at differs from the refold".into());
    }
    if case.next_due_at != next_due(&folded) {
        out.push("next_due_at differs from the refold".into());
    }
    let (days, tally): (Option<String>, Option<String>) = cases::table
        .find(&case.id)
        .select((cases::event_days, cases::deadline_tally))
        .first(conn)?;
    if json(days.as_deref().unwrap_or("null"))
        != serde_json::to_value(&folded.event_days).map_err(AppError::internal)?
    {
        out.push("event_days differ from the refold".into());
    }
    // None: not folded since the tally was kept (the export counts its
    // deadline rows instead).
    if let Some(tally) = tally {
        if DeadlineTally::from_text(&tally) != Some(DeadlineTally::of(&folded.deadlines)) {
            out.push("deadline_tally differs from the refold".into());
        }
    }
    let mut stored: Vec<DeadlineCells> = case_deadlines::table
        .filter(case_deadlines::case_id.eq(&case.id))
        .select((
            case_deadlines::rule_id,
            case_deadlines::occurrence,
            case_deadlines::started_at,
            case_deadlines::due_at,
            case_deadlines::outcome,
            case_deadlines::met_at,
            case_deadlines::on_time,
            case_deadlines::ended_by,
        ))
        .load(conn)?;
    let mut refolded: Vec<DeadlineCells> = folded
        .deadlines
        .iter()
        .map(|d| {
            let (outcome, met_at, on_time, ended_by) = outcome_cells(d);
            (
                d.rule.clone(),
                d.occurrence as i32,
                d.started_at.naive_utc(),
                d.due_at.naive_utc(),
                outcome.to_string(),
                met_at,
                on_time,
                ended_by.map(str::to_string),
            )
        })
        .collect();
    stored.sort();
    refolded.sort();
    if stored != refolded {
        out.push(format!(
            "deadlines differ from the refold ({} stored, {} refolded)",
            stored.len(),
            refolded.len()
        ));
    }
    Ok(out)
}

/// Writes a fold's result for `case` (whose assignee the deadlines copy),
/// and what the indicators read of it; `rows` are the events folded.
pub fn save(
    conn: &mut DbConnection,
    programme: &Programme,
    case: &Case,
    folded: &Folded,
    rows: &[EventRow],
) -> AppResult<()> {
    let next_due = next_due(folded);
    diesel::update(cases::table.find(&case.id))
        .set((
            cases::state.eq(&folded.state),
            cases::facts.eq(serde_json::to_string(&folded.facts).map_err(AppError::internal)?),
            cases::closed_at.eq(folded.closed_at.map(|t| t.naive_utc())),
            cases::next_due_at.eq(next_due),
            cases::event_days
                .eq(serde_json::to_string(&folded.event_days).map_err(AppError::internal)?),
            cases::deadline_tally.eq(DeadlineTally::of(&folded.deadlines).to_text()?),
        ))
        .execute(conn)?;
    write_deadlines(conn, case, folded)?;
    let deadlines = folded
        .deadlines
        .iter()
        .map(|d| {
            let (outcome, met_at, on_time, _) = outcome_cells(d);
            StoredDeadline(
                d.rule.clone(),
                d.due_at.naive_utc(),
                outcome.to_string(),
                met_at,
                on_time,
                d.late_in_days,
            )
        })
        .collect();
    super::projection::save(conn, programme, &case.id, folded, rows, deadlines)
}

/// How a case's deadlines stand, as the case export counts them: met on
/// time, met late, missed, and the due times (Unix seconds, UTC) of the
/// open ones, since which of those are overdue depends on when the export
/// runs. Those that ended as not applicable are not counted. Kept on the
/// case's row by the fold (`cases.deadline_tally`), so an export reads no
/// deadline rows.
#[derive(Debug, Default, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct DeadlineTally(u32, u32, u32, Vec<i64>);

impl DeadlineTally {
    /// The tally of a fold's deadlines.
    pub fn of(deadlines: &[Deadline]) -> DeadlineTally {
        let mut tally = DeadlineTally::default();
        for d in deadlines {
            let (outcome, _, on_time, _) = outcome_cells(d);
            tally.add(outcome, on_time, d.due_at.naive_utc());
        }
        tally
    }

    /// Counts one deadline, by its stored outcome (`case_deadlines`).
    pub fn add(&mut self, outcome: &str, on_time: Option<bool>, due_at: NaiveDateTime) {
        match (outcome, on_time) {
            ("met", Some(true)) => self.0 += 1,
            ("met", _) => self.1 += 1,
            ("missed", _) => self.2 += 1,
            ("open", _) => {
                // Kept in order: a tally is the same whatever order its
                // deadlines came in (the fold's, or the table's).
                let due = due_at.and_utc().timestamp();
                let at = self.3.partition_point(|&d| d <= due);
                self.3.insert(at, due);
            }
            _ => {}
        }
    }

    /// Met on time, met late, missed, overdue (open, due before `now`),
    /// and open.
    pub fn counts(&self, now: NaiveDateTime) -> [u32; 5] {
        let now = now.and_utc().timestamp();
        let overdue = self.3.iter().filter(|&&due| due < now).count() as u32;
        [
            self.0,
            self.1,
            self.2,
            overdue,
            self.3.len() as u32 - overdue,
        ]
    }

    /// As stored: `[on time, late, missed, [open due times]]`.
    pub fn to_text(&self) -> AppResult<String> {
        serde_json::to_string(self).map_err(AppError::internal)
    }

    /// A stored tally; `None` for one that does not read as one.
    pub fn from_text(text: &str) -> Option<DeadlineTally> {
        serde_json::from_str(text).ok()
    }
}

/// The `counters` row that says every case has its deadline tally: set
/// when [`fill_deadline_tallies`] ends, so later starts read one row.
const TALLIES_FILLED: &str = "deadline_tally_filled";

/// Gives each case folded before the fold kept its deadline tally
/// (migration 000036) the tally of its stored deadlines, once. Returns how
/// many cases it filled. A fold between the read and the write wins: only
/// a tally still missing is written.
pub fn fill_deadline_tallies(conn: &mut DbConnection) -> AppResult<usize> {
    if crate::changes::counter(conn, TALLIES_FILLED)? > 0 {
        return Ok(0);
    }
    let mut filled = 0;
    for programme in crate::programmes::Programmes::shipped().ids() {
        filled += fill_tallies_of(conn, programme)?;
    }
    write_tx(conn, |conn| {
        crate::changes::bump_counter(conn, TALLIES_FILLED)
    })?;
    Ok(filled)
}

/// The tally of each of `case_ids` counted from its `case_deadlines`
/// rows (an empty one for a case without any): for cases the fold has not
/// tallied since migration 000036.
pub fn tallies_from_rows(
    conn: &mut DbConnection,
    case_ids: &[&str],
) -> AppResult<HashMap<String, DeadlineTally>> {
    let mut tallies: HashMap<String, DeadlineTally> = case_ids
        .iter()
        .map(|&id| (id.to_string(), DeadlineTally::default()))
        .collect();
    for (case_id, outcome, on_time, due_at) in case_deadlines::table
        .filter(case_deadlines::case_id.eq_any(case_ids))
        .select((
            case_deadlines::case_id,
            case_deadlines::outcome,
            case_deadlines::on_time,
            case_deadlines::due_at,
        ))
        .load::<(String, String, Option<bool>, NaiveDateTime)>(conn)?
    {
        if let Some(tally) = tallies.get_mut(&case_id) {
            tally.add(&outcome, on_time, due_at);
        }
    }
    Ok(tallies)
}

/// [`fill_deadline_tallies`] for the cases of one programme.
fn fill_tallies_of(conn: &mut DbConnection, programme: &str) -> AppResult<usize> {
    const CHUNK: i64 = 1000;
    let mut filled = 0;
    let mut after: Option<(NaiveDateTime, String)> = None;
    loop {
        // In the order of the (programme, created_at, id) index: one pass.
        let mut query = cases::table
            .filter(cases::programme.eq(programme))
            .select((
                cases::created_at,
                cases::id,
                cases::deadline_tally.is_null(),
            ))
            .into_boxed();
        if let Some((at, id)) = &after {
            // `>=` first: a range the index can seek to.
            query = query
                .filter(cases::created_at.ge(*at))
                .filter(cases::created_at.gt(*at).or(cases::id.gt(id.clone())));
        }
        let chunk: Vec<(NaiveDateTime, String, bool)> = query
            .order((cases::created_at, cases::id))
            .limit(CHUNK)
            .load(conn)?;
        let Some(last) = chunk.last() else { break };
        after = Some((last.0, last.1.clone()));
        let missing: Vec<&str> = chunk.iter().filter(|c| c.2).map(|c| c.1.as_str()).collect();
        if !missing.is_empty() {
            write_tx(conn, |conn| {
                let tallies = tallies_from_rows(conn, &missing)?;
                for (id, tally) in tallies {
                    diesel::update(
                        cases::table
                            .find(id)
                            .filter(cases::deadline_tally.is_null()),
                    )
                    .set(cases::deadline_tally.eq(tally.to_text()?))
                    .execute(conn)?;
                }
                Ok::<_, AppError>(())
            })?;
            filled += missing.len();
        }
        if chunk.len() < CHUNK as usize {
            break;
        }
    }
    Ok(filled)
}

/// A row of `case_deadlines`: one occurrence of one of the case's rules,
/// as the fold counted it (also what a case's page reads of it).
#[derive(Debug, PartialEq, Eq, Hash, Queryable, Selectable, Insertable)]
#[diesel(table_name = case_deadlines)]
pub(super) struct DeadlineRecord {
    pub(super) case_id: String,
    pub(super) rule_id: String,
    pub(super) occurrence: i32,
    pub(super) programme: String,
    pub(super) site_id: String,
    pub(super) assigned_to: Option<String>,
    pub(super) started_at: NaiveDateTime,
    pub(super) due_at: NaiveDateTime,
    pub(super) soon_at: NaiveDateTime,
    pub(super) outcome: String,
    pub(super) met_at: Option<NaiveDateTime>,
    pub(super) on_time: Option<bool>,
    pub(super) ended_by: Option<String>,
    pub(super) late_in_days: bool,
}

/// Makes the case's stored deadlines those of `folded`, writing only the
/// rows that changed. A fold mostly leaves a case's deadlines as they
/// were (a follow-up meets one, or opens the next); rewriting them all
/// dirtied a page of each index for every one of them, pages the commit
/// then encrypts and writes.
fn write_deadlines(conn: &mut DbConnection, case: &Case, folded: &Folded) -> AppResult<()> {
    let stored: Vec<DeadlineRecord> = case_deadlines::table
        .filter(case_deadlines::case_id.eq(&case.id))
        .select(DeadlineRecord::as_select())
        .load(conn)?;
    let wanted: Vec<DeadlineRecord> = folded
        .deadlines
        .iter()
        .map(|d| deadline_row(case, d))
        .collect();
    let (stored_set, wanted_set): (HashSet<&DeadlineRecord>, HashSet<&DeadlineRecord>) =
        (stored.iter().collect(), wanted.iter().collect());
    for gone in stored.iter().filter(|row| !wanted_set.contains(row)) {
        diesel::delete(case_deadlines::table.find((&gone.case_id, &gone.rule_id, gone.occurrence)))
            .execute(conn)?;
    }
    let new: Vec<&DeadlineRecord> = wanted
        .iter()
        .filter(|row| !stored_set.contains(row))
        .collect();
    crate::db::insert_rows(
        conn,
        new,
        |conn, chunk| {
            diesel::insert_into(case_deadlines::table)
                .values(chunk)
                .execute(conn)
        },
        |conn, row| {
            diesel::insert_into(case_deadlines::table)
                .values(row)
                .execute(conn)
        },
    )?;
    Ok(())
}

/// A deadline's outcome columns: outcome, met or ended at, on time, by which event.
fn outcome_cells(
    d: &Deadline,
) -> (
    &'static str,
    Option<NaiveDateTime>,
    Option<bool>,
    Option<&str>,
) {
    match &d.outcome {
        Outcome::Open => ("open", None, None, None),
        Outcome::Met {
            at,
            event_id,
            on_time,
            ..
        } => (
            "met",
            Some(at.naive_utc()),
            Some(*on_time),
            Some(event_id.as_str()),
        ),
        Outcome::NotApplicable(ended) => (
            "not_applicable",
            Some(ended.at.naive_utc()),
            None,
            Some(ended.event_id.as_str()),
        ),
        Outcome::Missed(ended) => (
            "missed",
            Some(ended.at.naive_utc()),
            Some(false),
            Some(ended.event_id.as_str()),
        ),
    }
}

fn deadline_row(case: &Case, d: &Deadline) -> DeadlineRecord {
    let (outcome, met_at, on_time, ended_by) = outcome_cells(d);
    DeadlineRecord {
        case_id: case.id.clone(),
        rule_id: d.rule.clone(),
        occurrence: d.occurrence as i32,
        programme: case.programme.clone(),
        site_id: case.site_id.clone(),
        assigned_to: case.assigned_to.clone(),
        started_at: d.started_at.naive_utc(),
        due_at: d.due_at.naive_utc(),
        soon_at: d.soon_at.naive_utc(),
        outcome: outcome.to_string(),
        met_at,
        on_time,
        ended_by: ended_by.map(str::to_string),
        late_in_days: d.late_in_days,
    }
}

/// After a change to `programme`'s calendar: every open case's deadlines
/// are counted again with it. Returns how many cases were folded.
pub fn calendar_changed(conn: &mut DbConnection, programme: &Programme) -> AppResult<usize> {
    let calendar = crate::programmes::holidays::calendar(conn, programme)?;
    refold_open(conn, programme, &calendar)
}

/// Folds every open case of `programme` again — after its calendar
/// changed, or its rules did with a new release. A thousand cases per
/// round trip, so memory stays flat however many cases there are. Returns
/// how many cases were folded. Call inside a write transaction.
pub fn refold_open(
    conn: &mut DbConnection,
    programme: &Programme,
    calendar: &Calendar,
) -> AppResult<usize> {
    const CHUNK: i64 = 1000;
    let mut after = String::new();
    let mut folded = 0;
    loop {
        let chunk: Vec<Case> = cases::table
            .filter(cases::programme.eq(&programme.id))
            .filter(cases::closed_at.is_null())
            .filter(cases::merged_into.is_null())
            .filter(cases::id.gt(&after))
            .order(cases::id)
            .limit(CHUNK)
            .select(Case::as_select())
            .load(conn)?;
        let Some(last) = chunk.last() else { break };
        after = last.id.clone();
        let ids: Vec<&str> = chunk.iter().map(|c| c.id.as_str()).collect();
        let rows: Vec<EventRow> = case_events::table
            .filter(case_events::case_id.eq_any(&ids))
            .order((case_events::case_id, case_events::seq))
            .select(EventRow::as_select())
            .load(conn)?;
        let mut by_case: std::collections::HashMap<String, Vec<EventRow>> = Default::default();
        for row in rows {
            by_case.entry(row.case_id.clone()).or_default().push(row);
        }
        for case in &chunk {
            let own = by_case.remove(&case.id).unwrap_or_default();
            let mut input = fold_input(calendar, &own);
            let folded = fold::fold(programme, calendar, &mut input);
            save(conn, programme, case, &folded, &own)?;
        }
        folded += chunk.len();
    }
    Ok(folded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forms::{check, definitions};
    use serde_json::json;

    #[test]
    fn facts_and_when_it_happened_come_from_the_answers() {
        let set = definitions::shipped();
        let file = set
            .forms
            .iter()
            .find(|f| f.document["x-form"]["id"] == "kz.referral")
            .unwrap();
        let form = check::check(&file.document, &set.resources).unwrap();
        let completed = DateTime::parse_from_rfc3339("2026-11-21T09:00:00+05:00").unwrap();
        let data = json!({
            "receipt": {"received_at": "2026-11-20T17:00:00+05:00", "immediate_risk": true},
            "child": {"child_sex": "female"}
        });
        let event = SubmissionEvent::of(&form, &data, completed);
        assert_eq!(event.name, "referral_received");
        assert_eq!(event.occurred_at, "2026-11-20T17:00:00+05:00");
        assert_eq!(event.facts["referral.immediate_risk"], json!(true));
        assert_eq!(event.facts["child.sex"], json!("female"));
        // Not a date: when the form was completed.
        let data = json!({"receipt": {"received_at": "unknown"}});
        let event = SubmissionEvent::of(&form, &data, completed);
        assert_eq!(event.occurred_at, completed.to_rfc3339());
    }

    #[test]
    fn a_tally_counts_as_the_export_does_whatever_order_its_deadlines_come_in() {
        let at = |d: &str| {
            NaiveDateTime::parse_from_str(&format!("{d} 12:00:00"), "%Y-%m-%d %H:%M:%S").unwrap()
        };
        let deadlines = [
            ("open", None, "2026-12-20"),
            ("met", Some(true), "2026-11-01"),
            ("open", None, "2026-11-10"),
            ("met", Some(false), "2026-10-01"),
            ("missed", Some(false), "2026-09-01"),
            ("not_applicable", None, "2026-09-02"),
            ("open", None, "2026-12-01"),
        ];
        let mut forward = DeadlineTally::default();
        for (outcome, on_time, due) in deadlines {
            forward.add(outcome, on_time, at(due));
        }
        let mut backward = DeadlineTally::default();
        for (outcome, on_time, due) in deadlines.iter().rev() {
            backward.add(outcome, *on_time, at(due));
        }
        assert_eq!(forward, backward);
        assert_eq!(forward.to_text().unwrap(), backward.to_text().unwrap());
        // On time, late, missed, overdue, open: two of the three open ones
        // are past due on 2026-12-05, none before 2026-11-10 noon.
        assert_eq!(forward.counts(at("2026-12-05")), [1, 1, 1, 2, 1]);
        assert_eq!(forward.counts(at("2026-11-09")), [1, 1, 1, 0, 3]);
        assert_eq!(forward.counts(at("2027-01-01")), [1, 1, 1, 3, 0]);
        let text = forward.to_text().unwrap();
        assert_eq!(DeadlineTally::from_text(&text), Some(forward));
        assert_eq!(DeadlineTally::from_text("not a tally"), None);
    }
}
