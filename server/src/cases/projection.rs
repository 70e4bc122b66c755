//! What a report reads of a case (#19 item 4), kept beside it: only the
//! facts, event days and event records the programme's indicator
//! definitions use, and the deadlines the timeliness indicators count,
//! written by the fold in the same transaction as the case. Owns
//! `indicator_cases`.
//!
//! The lists come from the same definitions the engine counts with
//! ([`Reads::of`] over every indicator and breakdown of the programme), so
//! there is no second list to keep in step; a release whose definitions read
//! more makes the rows again at start ([`ensure`]), and until then a report
//! reads such a case the old way (`indicators::count`). It lives in
//! `cases`, below `indicators`, because the fold writes it
//! (`timeline::save`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use chrono::{NaiveDate, NaiveDateTime};
use diesel::prelude::*;
use foldhash::{HashMap, HashSet, HashSetExt};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::fold::Folded;
use super::partial;
use super::timeline::EventRow;
use crate::db::schema::{case_deadlines, case_events, cases, counters, indicator_cases};
use crate::db::{write_tx, DbConnection};
use crate::error::{AppError, AppResult};
use crate::programmes::indicators::{Criteria, Dimension, Indicator, PeriodBy, Unit};
use crate::programmes::{Moment, Programme, Programmes};

/// The facts, event days and event records some indicators and breakdowns
/// read.
#[derive(Debug, Default)]
pub struct Reads {
    pub facts: HashSet<String>,
    pub events: HashSet<String>,
    /// Events read record by record (units, and the events around them;
    /// breakdowns by an event's own answers).
    pub records: HashSet<String>,
}

impl Reads {
    pub fn of<'a>(
        indicators: impl IntoIterator<Item = &'a Indicator>,
        dimensions: impl IntoIterator<Item = &'a Dimension>,
    ) -> Reads {
        let mut reads = Reads {
            facts: HashSet::new(),
            events: HashSet::new(),
            records: HashSet::new(),
        };
        for i in indicators {
            reads.indicator(i);
        }
        for d in dimensions {
            reads.dimension(d);
        }
        reads
    }

    fn criteria(&mut self, c: &Criteria, by_record: bool) {
        if let Some(f) = &c.filter {
            self.facts.extend(f.refs().into_iter().map(|r| r.0.clone()));
        }
        self.events.extend(c.has_events.iter().cloned());
        self.events.extend(c.lacks_events.iter().cloned());
        self.events
            .extend(c.min_events.iter().map(|(e, _)| e.clone()));
        if by_record {
            self.records.extend(c.has_events.iter().cloned());
            self.records.extend(c.lacks_events.iter().cloned());
        }
    }

    fn indicator(&mut self, i: &Indicator) {
        let by_record = match &i.unit {
            Unit::Records(e) => {
                self.records.insert(e.clone());
                true
            }
            Unit::Cases => false,
        };
        self.criteria(&i.population, by_record);
        if let Some((n, d)) = &i.ratio {
            self.criteria(n, by_record);
            self.criteria(d, by_record);
        }
        if let Some(p) = &i.previous_case {
            if let Some(f) = &p.filter {
                self.facts.extend(f.refs().into_iter().map(|r| r.0.clone()));
            }
            self.facts.insert(p.date.clone());
        }
        match &i.period {
            PeriodBy::Event(e) => {
                self.events.insert(e.clone());
            }
            PeriodBy::Fact(f) => {
                self.facts.insert(f.clone());
            }
            _ => {}
        }
    }

    fn dimension(&mut self, d: &Dimension) {
        match d {
            Dimension::Fact(f) | Dimension::AgeFrom(f) | Dimension::PreviousCaseFact(f) => {
                self.facts.insert(f.clone());
            }
            Dimension::EventFact { event, fact } => {
                self.records.insert(event.clone());
                self.facts.insert(fact.clone());
            }
            Dimension::Readmission(Some(declared)) => {
                self.facts
                    .extend(declared.refs().into_iter().map(|r| r.0.clone()));
            }
            Dimension::Duration {
                event, from, to, ..
            } => {
                self.records.insert(event.clone());
                self.facts.insert(from.clone());
                self.facts.insert(to.clone());
            }
            _ => {}
        }
    }
}

/// What a programme's projection holds, and its name (a digest of the
/// lists: a release that reads other facts has another).
pub struct Spec {
    pub id: String,
    pub reads: Reads,
}

/// The projection of `programme`: what all its indicators and breakdowns
/// read. Made once per programme (the shipped ones do not change while
/// the server runs).
pub fn spec(programme: &Programme) -> Arc<Spec> {
    static SPECS: OnceLock<Mutex<HashMap<String, Arc<Spec>>>> = OnceLock::new();
    let specs = SPECS.get_or_init(Default::default);
    if let Some(spec) = specs.lock().expect("not poisoned").get(&programme.id) {
        return spec.clone();
    }
    let catalogue = &programme.indicators;
    let reads = Reads::of(&catalogue.list, catalogue.dimensions.iter().map(|(_, d)| d));
    let mut digest = Sha256::new();
    for (kind, set) in [
        ("facts", &reads.facts),
        ("events", &reads.events),
        ("records", &reads.records),
    ] {
        let mut names: Vec<&String> = set.iter().collect();
        names.sort();
        digest.update(format!("{kind}:{names:?}\n"));
    }
    let id = hex::encode(&digest.finalize()[..8]);
    let spec = Arc::new(Spec { id, reads });
    specs
        .lock()
        .expect("not poisoned")
        .insert(programme.id.clone(), spec.clone());
    spec
}

/// One record of an event as stored: when (UTC), its local day, and the
/// facts its form set that indicators read.
#[derive(Debug, Serialize, Deserialize)]
pub struct StoredRecord {
    #[serde(deserialize_with = "crate::time::stored::datetime")]
    pub at: NaiveDateTime,
    #[serde(deserialize_with = "crate::time::stored::date")]
    pub day: NaiveDate,
    pub facts: Map<String, Value>,
}

/// A deadline as the timeliness indicators read it: rule, due (UTC),
/// outcome (`open`, `met`, `missed`), met or ended at, on time, whether
/// its lateness counts in local days. Those that ended as not applicable
/// are left out: no report counts them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StoredDeadline(
    pub String,
    #[serde(deserialize_with = "crate::time::stored::datetime")] pub NaiveDateTime,
    pub String,
    #[serde(deserialize_with = "crate::time::stored::option_datetime")] pub Option<NaiveDateTime>,
    pub Option<bool>,
    pub bool,
);

/// The columns of `case_deadlines` a [`StoredDeadline`] holds, with the
/// case's id: the one select of them (the projection's fill and the
/// report's read of cases without a current projection).
#[derive(Queryable, Selectable)]
#[diesel(table_name = case_deadlines)]
pub struct DeadlineOfCase {
    case_id: String,
    rule_id: String,
    due_at: NaiveDateTime,
    outcome: String,
    met_at: Option<NaiveDateTime>,
    on_time: Option<bool>,
    late_in_days: bool,
}

impl DeadlineOfCase {
    /// The case's id and its deadline.
    pub fn into_pair(self) -> (String, StoredDeadline) {
        (
            self.case_id,
            StoredDeadline(
                self.rule_id,
                self.due_at,
                self.outcome,
                self.met_at,
                self.on_time,
                self.late_in_days,
            ),
        )
    }
}

/// A case's projection row.
struct Projection {
    closed_at: Option<NaiveDateTime>,
    facts: String,
    event_days: String,
    records: Option<String>,
    deadlines: String,
}

fn project<'a>(
    programme: &Programme,
    spec: &Spec,
    facts: impl IntoIterator<Item = (&'a String, &'a Value)>,
    event_days: impl IntoIterator<Item = (&'a String, &'a Vec<NaiveDate>)>,
    closed_at: Option<NaiveDateTime>,
    rows: &[EventRow],
    deadlines: Vec<StoredDeadline>,
) -> AppResult<Projection> {
    let reads = &spec.reads;
    let facts: BTreeMap<&String, &Value> = facts
        .into_iter()
        .filter(|(k, _)| reads.facts.contains(*k))
        .collect();
    let event_days: BTreeMap<&String, &Vec<NaiveDate>> = event_days
        .into_iter()
        .filter(|(k, _)| reads.events.contains(*k))
        .collect();
    let records = if reads.records.is_empty() {
        None
    } else {
        Some(
            serde_json::to_string(&records_of(programme, spec, rows))
                .map_err(AppError::internal)?,
        )
    };
    Ok(Projection {
        closed_at,
        facts: serde_json::to_string(&facts).map_err(AppError::internal)?,
        event_days: serde_json::to_string(&event_days).map_err(AppError::internal)?,
        records,
        deadlines: serde_json::to_string(&counted(deadlines)).map_err(AppError::internal)?,
    })
}

/// The deadlines a report counts, in one order whatever order they came
/// in (the fold's, or the table's at start).
fn counted(mut deadlines: Vec<StoredDeadline>) -> Vec<StoredDeadline> {
    deadlines.retain(|d| d.2 != "not_applicable");
    deadlines.sort();
    deadlines
}

/// The records of the events read one by one, each event's in the order
/// they happened (superseded ones left out).
fn records_of(
    programme: &Programme,
    spec: &Spec,
    rows: &[EventRow],
) -> BTreeMap<String, Vec<StoredRecord>> {
    let calendar = &programme.calendar;
    let mut wanted: Vec<&EventRow> = rows
        .iter()
        .filter(|r| !r.superseded && spec.reads.records.contains(&r.name))
        .collect();
    wanted.sort_by_key(|r| (r.occurred_at_utc, r.seq));
    let mut out: BTreeMap<String, Vec<StoredRecord>> = BTreeMap::new();
    for row in wanted {
        let moment = calendar
            .moment(&Value::String(row.occurred_at.clone()))
            .unwrap_or(Moment::instant(row.occurred_at_utc.and_utc()));
        let facts: HashMap<String, Value> =
            partial::entries(&row.facts, &spec.reads.facts).unwrap_or_default();
        out.entry(row.name.clone()).or_default().push(StoredRecord {
            at: moment.at.naive_utc(),
            day: calendar.local_date(moment.at),
            facts: facts
                .into_iter()
                .collect::<BTreeMap<_, _>>()
                .into_iter()
                .collect(),
        });
    }
    out
}

/// Writes the projection of a case just folded (`rows` its stored
/// events, `deadlines` the fold's as stored). Call in the fold's
/// transaction.
pub fn save(
    conn: &mut DbConnection,
    programme: &Programme,
    case_id: &str,
    folded: &Folded,
    rows: &[EventRow],
    deadlines: Vec<StoredDeadline>,
) -> AppResult<()> {
    let spec = spec(programme);
    let p = project(
        programme,
        &spec,
        &folded.facts,
        &folded.event_days,
        folded.closed_at.map(|t| t.naive_utc()),
        rows,
        deadlines,
    )?;
    write(conn, case_id, &spec, &p, Writer::Fold)?;
    // What a report read may have changed: a count kept from before is
    // no longer current (`indicators::Recent`).
    crate::changes::bump_counter(conn, &data_generation_counter(&programme.id))
}

/// The `counters` row every fold of a case of `programme` adds one to:
/// a report counted at one value is current while the value stays.
pub fn data_generation_counter(programme: &str) -> String {
    format!("indicator_data:{programme}")
}

/// Who writes a projection: the fold (the case as it now is) or the
/// start's fill (the case as read a moment before, which another server's
/// fold may have overtaken since, on PostgreSQL).
#[derive(Clone, Copy, PartialEq)]
enum Writer {
    Fold,
    Fill,
}

fn write(
    conn: &mut DbConnection,
    case_id: &str,
    spec: &Spec,
    p: &Projection,
    writer: Writer,
) -> AppResult<()> {
    let values = (
        indicator_cases::spec.eq(&spec.id),
        indicator_cases::closed_at.eq(p.closed_at),
        indicator_cases::facts.eq(&p.facts),
        indicator_cases::event_days.eq(&p.event_days),
        indicator_cases::records.eq(&p.records),
        indicator_cases::deadlines.eq(&p.deadlines),
    );
    // Update first: after a case's first fold the row is always there. The
    // fill replaces only a row of older definitions, never one a fold wrote.
    let row = indicator_cases::table.filter(indicator_cases::case_id.eq(case_id));
    let updated = match writer {
        Writer::Fold => diesel::update(row).set(values).execute(conn)?,
        Writer::Fill => diesel::update(row.filter(indicator_cases::spec.ne(&spec.id)))
            .set(values)
            .execute(conn)?,
    };
    if updated > 0 {
        return Ok(());
    }
    let insert = diesel::insert_into(indicator_cases::table)
        .values((indicator_cases::case_id.eq(case_id), values));
    // A row another server wrote between the update and the insert: the
    // fold's (newer) answers replace it, the fill's (older) give way.
    match (conn, writer) {
        (DbConnection::Pg(c), Writer::Fold) => insert
            .on_conflict(indicator_cases::case_id)
            .do_update()
            .set(values)
            .execute(c)?,
        (DbConnection::Pg(c), Writer::Fill) => insert.on_conflict_do_nothing().execute(c)?,
        (DbConnection::Sqlite(c), Writer::Fold) => insert
            .on_conflict(indicator_cases::case_id)
            .do_update()
            .set(values)
            .execute(c)?,
        (DbConnection::Sqlite(c), Writer::Fill) => insert.on_conflict_do_nothing().execute(c)?,
    };
    Ok(())
}

/// Makes the projection of every case of the shipped programmes that has
/// none, or one of older definitions (after the migration that made the
/// table, and after a release whose indicators read more), from the
/// cases as folded. Returns how many cases were projected.
pub fn ensure(conn: &mut DbConnection) -> AppResult<usize> {
    let shipped = Programmes::shipped();
    let mut ids: Vec<&str> = shipped.ids().collect();
    ids.sort_unstable();
    let mut done = 0;
    for id in ids {
        if let Some(programme) = shipped.get(id) {
            done += ensure_programme(conn, programme)?;
        }
    }
    Ok(done)
}

type StaleRow = (
    String,
    String,
    Option<String>,
    Option<NaiveDateTime>,
    NaiveDateTime,
);

/// The `counters` row that says every case of `programme` was projected
/// under the spec `spec_id`: set when a fill ends, so a later start (every
/// CLI command opens the database this way) reads one row instead of
/// joining every case with its projection (0.6–0.8 s at 100,000 cases).
/// From then on the fold keeps each row.
fn filled_marker(programme: &str, spec_id: &str) -> String {
    format!("indicator_projection:{programme}:{spec_id}")
}

fn ensure_programme(conn: &mut DbConnection, programme: &Programme) -> AppResult<usize> {
    const CHUNK: i64 = 1000;
    let spec = spec(programme);
    let marker = filled_marker(&programme.id, &spec.id);
    let filled = counters::table
        .find(&marker)
        .select(counters::name)
        .first::<String>(conn)
        .optional()?;
    if filled.is_some() {
        return Ok(0);
    }
    let mut after: Option<(NaiveDateTime, String)> = None;
    let mut done = 0;
    loop {
        // In the order a report reads them, so new rows lie in that order.
        let mut query = cases::table
            .left_join(indicator_cases::table.on(indicator_cases::case_id.eq(cases::id)))
            .filter(cases::programme.eq(&programme.id))
            .filter(
                indicator_cases::spec
                    .is_null()
                    .or(indicator_cases::spec.ne(&spec.id)),
            )
            .select((
                cases::id,
                cases::facts,
                cases::event_days,
                cases::closed_at,
                cases::created_at,
            ))
            .into_boxed();
        if let Some((at, id)) = &after {
            query = query
                .filter(cases::created_at.ge(*at))
                .filter(cases::created_at.gt(*at).or(cases::id.gt(id.clone())));
        }
        let chunk: Vec<StaleRow> = query
            .order((cases::created_at, cases::id))
            .limit(CHUNK)
            .load(conn)?;
        let Some(last) = chunk.last() else { break };
        after = Some((last.4, last.0.clone()));
        write_tx(conn, |conn| project_stored(conn, programme, &spec, &chunk))?;
        done += chunk.len();
        if chunk.len() < CHUNK as usize {
            break;
        }
    }
    write_tx(conn, |conn| {
        let earlier = format!("indicator_projection:{}:%", programme.id);
        diesel::delete(counters::table.filter(counters::name.like(earlier))).execute(conn)?;
        // Another server's fill may have set it meanwhile (PostgreSQL).
        let row = (counters::name.eq(&marker), counters::value.eq(1));
        match conn {
            DbConnection::Pg(c) => diesel::insert_into(counters::table)
                .values(row)
                .on_conflict_do_nothing()
                .execute(c)?,
            DbConnection::Sqlite(c) => diesel::insert_into(counters::table)
                .values(row)
                .on_conflict_do_nothing()
                .execute(c)?,
        };
        Ok::<_, AppError>(())
    })?;
    Ok(done)
}

/// Projects cases from what their last fold stored.
fn project_stored(
    conn: &mut DbConnection,
    programme: &Programme,
    spec: &Spec,
    chunk: &[StaleRow],
) -> AppResult<()> {
    let ids: Vec<&str> = chunk.iter().map(|r| r.0.as_str()).collect();
    // Cases folded before event days were stored need all their events.
    let all_events = chunk.iter().any(|r| r.2.is_none());
    let mut rows: HashMap<String, Vec<EventRow>> = HashMap::default();
    if all_events || !spec.reads.records.is_empty() {
        for row in case_events::table
            .filter(case_events::case_id.eq_any(&ids))
            .select(EventRow::as_select())
            .load::<EventRow>(conn)?
        {
            rows.entry(row.case_id.clone()).or_default().push(row);
        }
    }
    let mut deadlines: HashMap<String, Vec<StoredDeadline>> = HashMap::default();
    for row in case_deadlines::table
        .filter(case_deadlines::case_id.eq_any(&ids))
        .order((
            case_deadlines::case_id,
            case_deadlines::rule_id,
            case_deadlines::occurrence,
        ))
        .select(DeadlineOfCase::as_select())
        .load(conn)?
    {
        let (case_id, deadline) = row.into_pair();
        deadlines.entry(case_id).or_default().push(deadline);
    }
    let calendar = &programme.calendar;
    for (id, facts, event_days, closed_at, _) in chunk {
        let own = rows.remove(id).unwrap_or_default();
        let facts: HashMap<String, Value> =
            partial::entries(facts, &spec.reads.facts).unwrap_or_default();
        let days: BTreeMap<String, Vec<NaiveDate>> = match event_days {
            Some(text) => partial::entries::<Vec<NaiveDate>>(text, &spec.reads.events)
                .unwrap_or_default()
                .into_iter()
                .collect(),
            None => {
                let mut days: BTreeMap<String, Vec<NaiveDate>> = BTreeMap::new();
                for r in own.iter().filter(|r| !r.superseded) {
                    let at = calendar
                        .moment(&Value::String(r.occurred_at.clone()))
                        .unwrap_or(Moment::instant(r.occurred_at_utc.and_utc()))
                        .at;
                    days.entry(r.name.clone())
                        .or_default()
                        .push(calendar.local_date(at));
                }
                for d in days.values_mut() {
                    d.sort();
                    d.dedup();
                }
                days
            }
        };
        let own_deadlines = deadlines.remove(id).unwrap_or_default();
        let p = project(
            programme,
            spec,
            &facts,
            &days,
            *closed_at,
            &own,
            own_deadlines,
        )?;
        write(conn, id, spec, &p, Writer::Fill)?;
    }
    Ok(())
}

/// The records of `wanted` events in a projection's `records`, each with
/// only the `facts` wanted.
pub fn records_in(
    text: &str,
    wanted: &HashSet<String>,
    facts: &HashSet<String>,
) -> HashMap<String, Vec<StoredRecord>> {
    let mut out: HashMap<String, Vec<StoredRecord>> =
        partial::entries(text, wanted).unwrap_or_default();
    for record in out.values_mut().flatten() {
        record.facts.retain(|k, _| facts.contains(k));
    }
    out
}
