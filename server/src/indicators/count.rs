//! Counting: one pass over the programme's cases, a thousand at a time,
//! each case added to every cell it belongs to (its breakdown values and
//! the totals). One thread reads the pages; one per core parses and
//! counts them into cells of its own, which are added up at the end.
//! Memory holds the cells and a few pages, never all the cases.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use diesel::prelude::*;
use foldhash::{HashMap, HashMapExt, HashSet};
use serde_json::Value;

use super::periods::{index_of, Period};
use super::{Item, Request, Row, TOTAL, UNKNOWN};
use crate::cases::fold::Late;
use crate::cases::partial;
use crate::cases::projection::{self, Reads};
use crate::db::schema::{case_deadlines, case_events, cases, indicator_cases};
use crate::db::DbConnection;
use crate::error::{AppError, AppResult};
use crate::programmes::indicators::{Criteria, Dimension, Indicator, PeriodBy, Unit};
use crate::programmes::{Calendar, Condition, Moment};
use crate::time::stored::Dates;
use crate::time::{age_in_years, parse_date};

const PAGE: i64 = 1000;

/// What a report reads of one case.
struct CaseData {
    serial: u32,
    child: u32,
    /// The child's id (the case's own for a case without a child).
    child_key: String,
    site_id: String,
    admission: i32,
    opened_at: NaiveDateTime,
    opened: NaiveDate,
    closed: Option<NaiveDate>,
    facts: HashMap<String, Value>,
    events: HashMap<String, Dates>,
    /// The records of the events an indicator or breakdown reads one by
    /// one, in the order they happened.
    records: HashMap<String, Vec<Record>>,
}

/// One record of an event: when it happened and the facts its form set.
struct Record {
    at: NaiveDateTime,
    day: NaiveDate,
    facts: HashMap<String, Value>,
}

impl From<projection::StoredRecord> for Record {
    fn from(r: projection::StoredRecord) -> Record {
        Record {
            at: r.at,
            day: r.day,
            facts: r.facts.into_iter().collect(),
        }
    }
}

/// What a report reads of a case besides its own columns, as read and not
/// yet parsed: from its projection, or (without a current one) from the
/// case as folded and its own tables.
struct Read {
    row: CaseRow,
    closed_at: Option<NaiveDateTime>,
    facts: String,
    events: Stored<HashMap<String, Dates>>,
    records: Stored<HashMap<String, Vec<Record>>>,
    deadlines: Stored<Vec<DeadlineRow>>,
}

/// One part of what a report reads of a case: the projection's JSON (if
/// it has the part), or what was read from the case's own table.
enum Stored<T> {
    Text(Option<String>),
    Read(T),
}

/// What the counting needs of the cases: the request's facts, event days
/// and event records, and whether (and in which range) deadlines.
struct Wants {
    facts: HashSet<String>,
    events: HashSet<String>,
    records: HashSet<String>,
    deadlines: bool,
    due_from: NaiveDateTime,
    due_to: NaiveDateTime,
}

/// A record being counted as a unit: its own answers over the case's, and
/// the time from it to the next record of its event.
struct Counted<'a> {
    facts: Facts<'a>,
    from: NaiveDateTime,
    until: Option<NaiveDateTime>,
    records: &'a HashMap<String, Vec<Record>>,
}

impl CaseData {
    fn holds(&self, condition: &Option<Condition>) -> bool {
        Facts::of(&self.facts).hold(condition)
    }

    /// `criteria` hold with the events that happened by `last` (a day).
    fn meets(&self, criteria: &Criteria, last: NaiveDate) -> bool {
        let had = |event: &String| {
            self.events
                .get(event)
                .and_then(|days| days.first())
                .is_some_and(|first| *first <= last)
        };
        self.holds(&criteria.filter)
            && (criteria.has_events.is_empty() || criteria.has_events.iter().any(had))
            && !criteria.lacks_events.iter().any(had)
            && self.has_enough(criteria, last)
    }

    /// Enough records (distinct days) of each `min_events` event by `last`.
    fn has_enough(&self, criteria: &Criteria, last: NaiveDate) -> bool {
        criteria.min_events.iter().all(|(event, min)| {
            let days = self
                .events
                .get(event)
                .map_or(0, |days| days.iter().filter(|d| **d <= last).count());
            days >= *min
        })
    }

    /// `criteria` hold for one record counted as a unit: its answers, and
    /// the events that followed it before its event's next record.
    fn record_meets(&self, criteria: &Criteria, last: NaiveDate, unit: &Counted) -> bool {
        let had =
            |event: &String| {
                unit.records.get(event).into_iter().flatten().any(|r| {
                    r.at >= unit.from && unit.until.is_none_or(|u| r.at < u) && r.day <= last
                })
            };
        unit.facts.hold(&criteria.filter)
            && (criteria.has_events.is_empty() || criteria.has_events.iter().any(had))
            && !criteria.lacks_events.iter().any(had)
            && self.has_enough(criteria, last)
    }

    /// The latest record of `event`.
    fn latest(&self, event: &str) -> Option<&Record> {
        self.records.get(event).and_then(|r| r.last())
    }

    fn date_fact(&self, fact: &str) -> Option<NaiveDate> {
        Facts::of(&self.facts).date(fact)
    }
}

/// The answers a unit is judged on: a counted record's own over its
/// case's, looked up in both rather than merged into a copy of the case's
/// for each record.
#[derive(Clone, Copy)]
struct Facts<'a> {
    record: Option<&'a HashMap<String, Value>>,
    case: &'a HashMap<String, Value>,
}

impl<'a> Facts<'a> {
    fn of(case: &'a HashMap<String, Value>) -> Facts<'a> {
        Facts { record: None, case }
    }

    fn get(&self, fact: &str) -> Option<&'a Value> {
        self.record
            .and_then(|own| own.get(fact))
            .or_else(|| self.case.get(fact))
    }

    fn hold(&self, condition: &Option<Condition>) -> bool {
        condition
            .as_ref()
            .is_none_or(|c| c.test(&|fact| self.get(&fact.0)))
    }

    fn date(&self, fact: &str) -> Option<NaiveDate> {
        let text = self.get(fact)?.as_str()?;
        parse_date(text.get(..10)?)
    }
}

/// Interned strings: breakdown values and children, as small numbers.
#[derive(Default, Clone)]
struct Interner {
    ids: HashMap<String, u32>,
    names: Vec<String>,
}

impl Interner {
    fn new() -> Interner {
        let mut i = Interner::default();
        i.id(TOTAL);
        i
    }

    fn id(&mut self, text: &str) -> u32 {
        if let Some(id) = self.ids.get(text) {
            return *id;
        }
        let id = self.names.len() as u32;
        self.ids.insert(text.to_string(), id);
        self.names.push(text.to_string());
        id
    }
}

const TOTAL_ID: u32 = 0;
const MAX_DIMS: usize = super::MAX_BREAKDOWNS;

/// (item, period, breakdown values; `TOTAL_ID` for totals and unused).
type Key = (u32, u32, [u32; MAX_DIMS]);

#[derive(Default)]
struct Cell {
    cases: u64,
    /// The serial of the last case counted, so a case with several
    /// deadlines in one cell counts once.
    last_case: u32,
    children: Vec<u32>,
    numerator: u64,
    denominator: u64,
    delays_hours: Vec<f64>,
    delays_days: Vec<f64>,
}

impl Cell {
    fn add_case(&mut self, case: &CaseData) {
        if self.last_case != case.serial {
            self.last_case = case.serial;
            self.cases += 1;
            if self.children.last() != Some(&case.child) {
                self.children.push(case.child);
            }
        }
    }
}

/// The child's earlier case an indicator's `previous_case` may point at.
struct Earlier {
    opened_at: NaiveDateTime,
    /// Per indicator with `previous_case`: its date fact, if the filter
    /// held; the values of the `previous_case_fact` breakdowns.
    qualifies: Vec<Option<NaiveDate>>,
    values: Vec<Vec<u32>>,
}

struct Counter<'a> {
    request: &'a Request,
    calendar: &'a Calendar,
    now: DateTime<Utc>,
    strings: Interner,
    children: HashMap<String, u32>,
    cells: HashMap<Key, Cell>,
    /// Indices of items with `previous_case`, in item order.
    with_previous: Vec<usize>,
    earlier: std::sync::Arc<HashMap<String, Vec<Earlier>>>,
    rule_items: HashMap<String, usize>,
    /// The cases counted so far.
    serial: u32,
}

/// A case as a report pages through it: the case's own columns (all in
/// the index it pages by) and its projection, if it has one.
type CaseRow = (
    String,
    Option<String>,
    String,
    i32,
    Option<NaiveDateTime>,
    NaiveDateTime,
    Option<String>,
    Option<NaiveDateTime>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// A case's columns a report reads when it has no current projection:
/// facts, event days, closure.
type Unprojected = (String, Option<String>, Option<NaiveDateTime>);

/// Cases without a projection of the current definitions (a release that
/// reads more, before its first start made them again): read as folded.
fn unprojected(conn: &mut DbConnection, ids: &[&str]) -> AppResult<HashMap<String, Unprojected>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    Ok(cases::table
        .filter(cases::id.eq_any(ids))
        .select((cases::id, cases::facts, cases::event_days, cases::closed_at))
        .load::<(String, String, Option<String>, Option<NaiveDateTime>)>(conn)?
        .into_iter()
        .map(|(id, facts, days, closed)| (id, (facts, days, closed)))
        .collect())
}

/// The facts, event days and event records the items and breakdowns of
/// `request` read.
fn needs(request: &Request) -> (HashSet<String>, HashSet<String>, HashSet<String>) {
    let reads = Reads::of(
        request.items.iter().filter_map(|i| match i {
            Item::Indicator(i) => Some(i),
            Item::Timeliness(_) => None,
        }),
        request.by.iter().map(|(_, d)| d),
    );
    (reads.facts, reads.events, reads.records)
}

pub(super) fn count(
    conn: &mut DbConnection,
    request: &Request,
    now: DateTime<Utc>,
) -> AppResult<Vec<Row>> {
    let calendar = &request.programme.calendar;
    let mut counter = Counter::new(request, now);
    let (facts, events, records) = needs(request);
    if !counter.with_previous.is_empty() {
        counter.load_earlier(conn, &facts)?;
    }
    // Cases opened after the range cannot count in it. One day of margin:
    // the range is in local days, `opened_at` in UTC. The deadlines
    // counted are due before the same bound.
    let opened_before = (request.to + chrono::Duration::days(2)).and_time(chrono::NaiveTime::MIN);
    let wants = Wants {
        facts,
        events,
        records,
        deadlines: !counter.rule_items.is_empty(),
        due_from: (request.from - chrono::Duration::days(1)).and_time(chrono::NaiveTime::MIN),
        due_to: opened_before,
    };
    // Parsing the projections is most of a report's work (#19 item 4):
    // this thread reads the pages, the others each parse and count what
    // they are handed into cells of their own, added up at the end.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    let (pages, read) = std::sync::mpsc::sync_channel::<Vec<Read>>(workers);
    // Owned by the counting threads alone: should they all stop, the
    // channel closes and the reader stops too.
    let read = std::sync::Arc::new(std::sync::Mutex::new(read));
    std::thread::scope(|scope| {
        let counting: Vec<_> = (0..workers)
            .map(|_| {
                let (read, wants, mut mine) = (read.clone(), &wants, counter.fork());
                scope.spawn(move || {
                    loop {
                        // The lock only while waiting for a page (the others
                        // would wait too), never while counting one.
                        let page = read
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .recv();
                        let Ok(page) = page else { break };
                        for case in page.into_iter().filter_map(|r| parse(calendar, wants, r)) {
                            mine.count_case(case);
                        }
                    }
                    mine
                })
            })
            .collect();
        drop(read);
        // A closed channel: every counting thread stopped (a panic, found
        // at the join).
        let done = read_pages(conn, request, &wants, opened_before, |page| {
            pages.send(page).is_ok()
        });
        drop(pages);
        for thread in counting {
            let theirs = thread
                .join()
                .map_err(|_| AppError::internal("indicators: a counting thread panicked"))?;
            counter.merge(theirs);
        }
        done
    })?;
    Ok(counter.rows())
}

/// Hands `each` the programme's cases of the request's sites opened before
/// `opened_before`, a page at a time in the order they were created, with
/// what their projections hold (or what is read instead); stops when
/// `each` says so.
fn read_pages(
    conn: &mut DbConnection,
    request: &Request,
    wants: &Wants,
    opened_before: NaiveDateTime,
    mut each: impl FnMut(Vec<Read>) -> bool,
) -> AppResult<()> {
    let calendar = &request.programme.calendar;
    let spec = projection::spec(&request.programme);
    let sites: HashSet<&str> = request.site_ids.iter().map(String::as_str).collect();
    let mut after: Option<(NaiveDateTime, String)> = None;
    loop {
        let mut query = cases::table
            .left_join(indicator_cases::table)
            .filter(cases::programme.eq(&request.programme.id))
            .filter(cases::merged_into.is_null())
            .filter(cases::opened_at.lt(opened_before))
            .select((
                cases::id,
                cases::child_id,
                cases::site_id,
                cases::admission,
                cases::opened_at,
                cases::created_at,
                indicator_cases::spec.nullable(),
                indicator_cases::closed_at.nullable(),
                indicator_cases::facts.nullable(),
                indicator_cases::event_days.nullable(),
                indicator_cases::records.nullable(),
                indicator_cases::deadlines.nullable(),
            ))
            .into_boxed();
        if let Some((at, id)) = &after {
            // `>=` first: the index (programme, created_at, id, ...) seeks
            // to where the last page ended.
            query = query
                .filter(cases::created_at.ge(*at))
                .filter(cases::created_at.gt(*at).or(cases::id.gt(id.clone())));
        }
        let page: Vec<CaseRow> = query
            .order((cases::created_at, cases::id))
            .limit(PAGE)
            .load(conn)?;
        let Some(last) = page.last() else { break };
        after = Some((last.5, last.0.clone()));
        let full = page.len() == PAGE as usize;
        // The sites asked for, here rather than in SQL: with only the
        // programme to seek by, SQLite reads the index that holds every
        // column above instead of the case rows.
        let page: Vec<CaseRow> = page
            .into_iter()
            .filter(|r| sites.contains(r.2.as_str()))
            .collect();
        let stale: Vec<&str> = page
            .iter()
            .filter(|r| r.6.as_deref() != Some(spec.id.as_str()))
            .map(|r| r.0.as_str())
            .collect();
        let mut old = unprojected(conn, &stale)?;
        // Cases folded before event days were stored: read their events.
        let unfolded: Vec<&str> = old
            .iter()
            .filter(|(_, r)| r.1.is_none())
            .map(|(id, _)| id.as_str())
            .collect();
        let mut stored_events = if unfolded.is_empty() {
            HashMap::new()
        } else {
            event_days_of(conn, calendar, &unfolded, &wants.events)?
        };
        let mut records = if wants.records.is_empty() || stale.is_empty() {
            HashMap::new()
        } else {
            records_of(conn, calendar, &stale, &wants.records, &wants.facts)?
        };
        let mut deadlines = if !wants.deadlines || stale.is_empty() {
            HashMap::new()
        } else {
            deadlines_of(conn, &stale, wants.due_from, wants.due_to)?
        };
        let page = page
            .into_iter()
            .map(|mut row| match old.remove(&row.0) {
                Some((facts, events, closed_at)) => Read {
                    closed_at,
                    facts,
                    events: match events {
                        Some(text) => Stored::Text(Some(text)),
                        None => Stored::Read(
                            stored_events
                                .remove(&row.0)
                                .unwrap_or_default()
                                .into_iter()
                                .map(|(event, days)| (event, Dates(days)))
                                .collect(),
                        ),
                    },
                    records: Stored::Read(records.remove(&row.0).unwrap_or_default()),
                    deadlines: Stored::Read(deadlines.remove(&row.0).unwrap_or_default()),
                    row,
                },
                None => Read {
                    closed_at: row.7,
                    facts: row.8.take().unwrap_or_default(),
                    events: Stored::Text(row.9.take()),
                    records: Stored::Text(row.10.take()),
                    deadlines: Stored::Text(row.11.take()),
                    row,
                },
            })
            .collect();
        if !each(page) || !full {
            break;
        }
    }
    Ok(())
}

/// A case parsed for counting, less its serial and child number (the
/// counter's to give).
struct Parsed {
    case: CaseData,
    deadlines: Vec<DeadlineRow>,
}

/// Parses what was read of a case; `None` for a case not yet opened.
fn parse(calendar: &Calendar, wants: &Wants, read: Read) -> Option<Parsed> {
    let (id, child_id, site_id, admission, opened_at, ..) = read.row;
    let opened_at = opened_at?;
    let events = match read.events {
        Stored::Text(Some(text)) => {
            partial::entries::<Dates>(&text, &wants.events).unwrap_or_default()
        }
        Stored::Text(None) => HashMap::new(),
        Stored::Read(days) => days,
    };
    let records = match read.records {
        Stored::Text(Some(text)) if !wants.records.is_empty() => {
            projection::records_in(&text, &wants.records, &wants.facts)
                .into_iter()
                .map(|(event, list)| (event, list.into_iter().map(Record::from).collect()))
                .collect()
        }
        Stored::Text(_) => HashMap::new(),
        Stored::Read(records) => records,
    };
    let deadlines = match read.deadlines {
        _ if !wants.deadlines => Vec::new(),
        Stored::Text(Some(text)) => projected_deadlines(&text, wants.due_from, wants.due_to),
        Stored::Text(None) => Vec::new(),
        Stored::Read(deadlines) => deadlines,
    };
    Some(Parsed {
        case: CaseData {
            serial: 0,
            child: 0,
            child_key: child_id.unwrap_or(id),
            site_id,
            admission,
            opened_at,
            opened: calendar.local_date(opened_at.and_utc()),
            closed: read.closed_at.map(|t| calendar.local_date(t.and_utc())),
            facts: partial::entries::<Value>(&read.facts, &wants.facts).unwrap_or_default(),
            events,
            records,
        },
        deadlines,
    })
}

/// A case's deadline as a report reads it.
struct DeadlineRow {
    rule_id: String,
    due_at: NaiveDateTime,
    outcome: String,
    met_at: Option<NaiveDateTime>,
    on_time: Option<bool>,
    late_in_days: bool,
}

impl From<projection::StoredDeadline> for DeadlineRow {
    fn from(d: projection::StoredDeadline) -> DeadlineRow {
        let projection::StoredDeadline(rule_id, due_at, outcome, met_at, on_time, late_in_days) = d;
        DeadlineRow {
            rule_id,
            due_at,
            outcome,
            met_at,
            on_time,
            late_in_days,
        }
    }
}

fn deadlines_of(
    conn: &mut DbConnection,
    ids: &[&str],
    from: NaiveDateTime,
    to: NaiveDateTime,
) -> AppResult<HashMap<String, Vec<DeadlineRow>>> {
    let mut out: HashMap<String, Vec<DeadlineRow>> = HashMap::new();
    for row in case_deadlines::table
        .filter(case_deadlines::case_id.eq_any(ids))
        .filter(case_deadlines::due_at.ge(from))
        .filter(case_deadlines::due_at.lt(to))
        .filter(case_deadlines::outcome.ne("not_applicable"))
        .select(projection::DeadlineOfCase::as_select())
        .load(conn)?
    {
        let (case_id, deadline) = row.into_pair();
        out.entry(case_id).or_default().push(deadline.into());
    }
    Ok(out)
}

/// The deadlines of a case's projection due in `from..to` (as
/// `deadlines_of` reads them from `case_deadlines`).
fn projected_deadlines(text: &str, from: NaiveDateTime, to: NaiveDateTime) -> Vec<DeadlineRow> {
    serde_json::from_str::<Vec<projection::StoredDeadline>>(text)
        .unwrap_or_default()
        .into_iter()
        .filter(|d| d.1 >= from && d.1 < to && d.2 != "not_applicable")
        .map(DeadlineRow::from)
        .collect()
}

/// The records of `wanted` events of cases, each with the `facts` its form
/// set, in the order they happened (superseded ones left out).
fn records_of(
    conn: &mut DbConnection,
    calendar: &Calendar,
    ids: &[&str],
    wanted: &HashSet<String>,
    facts: &HashSet<String>,
) -> AppResult<HashMap<String, HashMap<String, Vec<Record>>>> {
    let names: Vec<&str> = wanted.iter().map(String::as_str).collect();
    let mut out: HashMap<String, HashMap<String, Vec<Record>>> = HashMap::new();
    for (case_id, name, occurred_at, utc, text) in case_events::table
        .filter(case_events::case_id.eq_any(ids))
        .filter(case_events::name.eq_any(&names))
        .filter(case_events::superseded.eq(false))
        .order((case_events::occurred_at_utc, case_events::seq))
        .select((
            case_events::case_id,
            case_events::name,
            case_events::occurred_at,
            case_events::occurred_at_utc,
            case_events::facts,
        ))
        .load::<(String, String, String, NaiveDateTime, String)>(conn)?
    {
        let moment = calendar
            .moment(&Value::String(occurred_at))
            .unwrap_or(Moment::instant(utc.and_utc()));
        out.entry(case_id)
            .or_default()
            .entry(name)
            .or_default()
            .push(Record {
                at: moment.at.naive_utc(),
                day: calendar.local_date(moment.at),
                facts: partial::entries::<Value>(&text, facts).unwrap_or_default(),
            });
    }
    Ok(out)
}

/// The event days of cases whose fold did not store them.
fn event_days_of(
    conn: &mut DbConnection,
    calendar: &Calendar,
    ids: &[&str],
    wanted: &HashSet<String>,
) -> AppResult<HashMap<String, HashMap<String, Vec<NaiveDate>>>> {
    let mut out: HashMap<String, HashMap<String, Vec<NaiveDate>>> = HashMap::new();
    for (case_id, name, occurred_at, utc) in case_events::table
        .filter(case_events::case_id.eq_any(ids))
        .filter(case_events::superseded.eq(false))
        .select((
            case_events::case_id,
            case_events::name,
            case_events::occurred_at,
            case_events::occurred_at_utc,
        ))
        .load::<(String, String, String, NaiveDateTime)>(conn)?
    {
        if !wanted.contains(&name) {
            continue;
        }
        let at = calendar
            .moment(&Value::String(occurred_at))
            .unwrap_or(Moment::instant(utc.and_utc()))
            .at;
        let days = out.entry(case_id).or_default().entry(name).or_default();
        days.push(calendar.local_date(at));
    }
    for days in out.values_mut().flat_map(|m| m.values_mut()) {
        days.sort();
        days.dedup();
    }
    Ok(out)
}

impl<'a> Counter<'a> {
    fn new(request: &'a Request, now: DateTime<Utc>) -> Counter<'a> {
        Counter {
            calendar: &request.programme.calendar,
            request,
            now,
            strings: Interner::new(),
            children: HashMap::new(),
            cells: HashMap::new(),
            with_previous: request
                .items
                .iter()
                .enumerate()
                .filter(|(_, i)| matches!(i, Item::Indicator(i) if i.previous_case.is_some()))
                .map(|(n, _)| n)
                .collect(),
            earlier: Default::default(),
            rule_items: request
                .items
                .iter()
                .enumerate()
                .filter_map(|(n, i)| match i {
                    Item::Timeliness(r) => Some((r.id.clone(), n)),
                    _ => None,
                })
                .collect(),
            serial: 0,
        }
    }

    /// A counter for another thread: the same report and strings (so
    /// that the earlier cases' values keep their numbers), no cells.
    fn fork(&self) -> Counter<'a> {
        Counter {
            request: self.request,
            calendar: self.calendar,
            now: self.now,
            strings: self.strings.clone(),
            children: HashMap::new(),
            cells: HashMap::new(),
            with_previous: self.with_previous.clone(),
            earlier: self.earlier.clone(),
            rule_items: self.rule_items.clone(),
            serial: 0,
        }
    }

    /// Adds the cells another thread counted, its strings and children
    /// renumbered as this counter's.
    fn merge(&mut self, other: Counter) {
        let strings: Vec<u32> = other
            .strings
            .names
            .iter()
            .map(|n| self.strings.id(n))
            .collect();
        let mut children = vec![0; other.children.len()];
        for (key, id) in other.children {
            children[id as usize] = self.child(key);
        }
        for ((n, p, values), cell) in other.cells {
            let mine = self
                .cells
                .entry((n, p, values.map(|v| strings[v as usize])))
                .or_default();
            mine.cases += cell.cases;
            mine.children
                .extend(cell.children.iter().map(|c| children[*c as usize]));
            mine.numerator += cell.numerator;
            mine.denominator += cell.denominator;
            mine.delays_hours.extend(cell.delays_hours);
            mine.delays_days.extend(cell.delays_days);
        }
    }

    /// The number of the child `key`.
    fn child(&mut self, key: String) -> u32 {
        let next = self.children.len() as u32;
        *self.children.entry(key).or_insert(next)
    }

    /// Counts a parsed case, giving it its serial and its child's number.
    fn count_case(&mut self, parsed: Parsed) {
        let Parsed {
            mut case,
            deadlines,
        } = parsed;
        self.serial += 1;
        case.serial = self.serial;
        case.child = match self.children.get(&case.child_key) {
            Some(&child) => child,
            None => self.child(case.child_key.clone()),
        };
        self.add(&case, deadlines);
    }

    /// The values of every breakdown for a case whose facts are `facts`
    /// (the case's, or a counted record's over them), as of `last`.
    fn dims(&mut self, case: &CaseData, facts: Facts, last: NaiveDate) -> Vec<Vec<u32>> {
        let request = self.request;
        request
            .by
            .iter()
            .map(|(_, d)| self.values(case, facts, d, last))
            .collect()
    }

    /// The values of one breakdown for a case (a list-valued fact gives
    /// several; no answer gives `unknown`).
    fn values(
        &mut self,
        case: &CaseData,
        facts: Facts,
        dimension: &Dimension,
        last: NaiveDate,
    ) -> Vec<u32> {
        let request = self.request;
        let one: &str = match dimension {
            Dimension::Fact(f) => return self.fact_values(facts.get(f)),
            Dimension::EventFact { event, fact } => {
                let value = case.latest(event).and_then(|r| r.facts.get(fact));
                return self.fact_values(value);
            }
            Dimension::Duration {
                event,
                from,
                to,
                bands,
            } => case
                .latest(event)
                .and_then(|r| {
                    let start = Facts::of(&r.facts).date(from)?;
                    // Still running at the period's end: measured to it.
                    let end = Facts::of(&r.facts)
                        .date(to)
                        .map_or(last, |end| end.min(last));
                    let days = (end - start).num_days();
                    (days >= 0).then_some(days as u32)
                })
                .and_then(|days| bands.iter().find(|b| b.holds(days)))
                .map_or(UNKNOWN, |b| b.id.as_str()),
            Dimension::AgeFrom(f) => facts
                .date(f)
                .and_then(|born| age_in_years(born, case.opened))
                .and_then(|age| {
                    request
                        .programme
                        .indicators
                        .age_bands
                        .iter()
                        .find(|b| b.holds(age as u32))
                })
                .map_or(UNKNOWN, |b| b.id.as_str()),
            Dimension::Readmission(_) if case.admission > 0 => "yes",
            Dimension::Readmission(Some(declared)) if declared.test(&|fact| facts.get(&fact.0)) => {
                "yes"
            }
            Dimension::Readmission(_) => "no",
            Dimension::Site => request
                .site_codes
                .get(&case.site_id)
                .map_or(UNKNOWN, String::as_str),
            Dimension::Programme => &request.programme.id,
            // Filled per indicator from the earlier case it found.
            Dimension::PreviousCaseFact(_) => UNKNOWN,
        };
        vec![self.strings.id(one)]
    }

    fn fact_values(&mut self, value: Option<&Value>) -> Vec<u32> {
        let mut ids: Vec<u32> = match value {
            Some(Value::Array(items)) if !items.is_empty() => {
                items.iter().map(|v| self.value_id(v)).collect()
            }
            Some(Value::Array(_) | Value::Null) | None => vec![self.strings.id(UNKNOWN)],
            Some(v) => vec![self.value_id(v)],
        };
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    fn value_id(&mut self, value: &Value) -> u32 {
        match value {
            Value::String(s) => self.strings.id(s),
            Value::Bool(b) => self.strings.id(if *b { "true" } else { "false" }),
            other => self.strings.id(&other.to_string()),
        }
    }

    /// Counts a case (and a numerator's answer) in every cell of `dims`.
    fn add_to(
        &mut self,
        n: usize,
        p: usize,
        dims: &[Vec<u32>],
        case: &CaseData,
        met: Option<bool>,
    ) {
        each_cell(n, p, dims, |key| {
            let cell = self.cells.entry(key).or_default();
            cell.add_case(case);
            if let Some(met) = met {
                cell.denominator += 1;
                cell.numerator += u64::from(met);
            }
        });
    }

    fn add(&mut self, case: &CaseData, deadlines: Vec<DeadlineRow>) {
        let request = self.request;
        // A duration is measured to each period's end: breakdowns per period.
        let timed = request
            .by
            .iter()
            .any(|(_, d)| matches!(d, Dimension::Duration { .. }));
        let base = self.dims(case, Facts::of(&case.facts), request.to);
        for (n, item) in request.items.iter().enumerate() {
            let Item::Indicator(indicator) = item else {
                continue;
            };
            if let Unit::Records(event) = &indicator.unit {
                self.add_records(n, indicator, event, case);
                continue;
            }
            let periods = periods_of(indicator, case, &request.periods);
            if periods.is_empty() {
                continue;
            }
            let previous = match &indicator.previous_case {
                None => None,
                Some(_) => match self.previous_of(n, case) {
                    Some(found) => Some(found),
                    None => continue,
                },
            };
            for p in periods {
                let last = request.periods[p].last;
                if !case.meets(&indicator.population, last) {
                    continue;
                }
                let numerator = match &indicator.ratio {
                    None => None,
                    Some((num, den)) => {
                        if !case.meets(den, last) {
                            continue;
                        }
                        Some(case.meets(num, last))
                    }
                };
                let dims = if timed {
                    self.dims(case, Facts::of(&case.facts), last)
                } else {
                    base.clone()
                };
                let dims = match &previous {
                    Some(values) => self.with_previous_values(&dims, values),
                    None => dims,
                };
                self.add_to(n, p, &dims, case, numerator);
            }
        }
        for d in deadlines {
            let Some(&n) = self.rule_items.get(&d.rule_id) else {
                continue;
            };
            let due = d.due_at.and_utc();
            let Some(p) = index_of(&request.periods, self.calendar.local_date(due)) else {
                continue;
            };
            let on_time = match d.outcome.as_str() {
                "met" => d.on_time == Some(true),
                "missed" => false,
                "open" if due < self.now => false,
                _ => continue,
            };
            let delay = match (d.outcome.as_str(), d.met_at) {
                ("met", Some(met)) if !on_time => {
                    Late::of(self.calendar, d.late_in_days, due, met.and_utc())
                }
                _ => None,
            };
            let dims = if timed {
                self.dims(case, Facts::of(&case.facts), request.periods[p].last)
            } else {
                base.clone()
            };
            each_cell(n, p, &dims, |key| {
                let cell = self.cells.entry(key).or_default();
                cell.add_case(case);
                cell.denominator += 1;
                cell.numerator += u64::from(on_time);
                match delay {
                    Some(Late::Hours(h)) => cell.delays_hours.push(h),
                    Some(Late::Days(d)) => cell.delays_days.push(d as f64),
                    None => {}
                }
            });
        }
    }

    /// An indicator whose unit is each record of `event` (BT E2: each
    /// referral; BT D3: each plan version): every record in a period is
    /// one unit of the denominator, judged on its own answers.
    fn add_records(&mut self, n: usize, indicator: &Indicator, event: &str, case: &CaseData) {
        let Some(list) = case.records.get(event) else {
            return;
        };
        for (k, record) in list.iter().enumerate() {
            let Some(p) = index_of(&self.request.periods, record.day) else {
                continue;
            };
            let last = self.request.periods[p].last;
            let unit = Counted {
                facts: Facts {
                    record: Some(&record.facts),
                    case: &case.facts,
                },
                from: record.at,
                until: list.get(k + 1).map(|next| next.at),
                records: &case.records,
            };
            if !case.record_meets(&indicator.population, last, &unit) {
                continue;
            }
            let numerator = match &indicator.ratio {
                None => None,
                Some((num, den)) => {
                    if !case.record_meets(den, last, &unit) {
                        continue;
                    }
                    Some(case.record_meets(num, last, &unit))
                }
            };
            let dims = self.dims(case, unit.facts, last);
            self.add_to(n, p, &dims, case, numerator);
        }
    }

    /// The values of the `previous_case_fact` breakdowns taken from the
    /// earlier case found.
    fn with_previous_values(&self, dims: &[Vec<u32>], previous: &[Vec<u32>]) -> Vec<Vec<u32>> {
        let mut next = previous.iter();
        self.request
            .by
            .iter()
            .zip(dims)
            .map(|((_, d), values)| match d {
                Dimension::PreviousCaseFact(_) => next.next().cloned().unwrap_or_default(),
                _ => values.clone(),
            })
            .collect()
    }

    /// For item `n` (with `previous_case`): the breakdown values of the
    /// child's latest earlier case, if it qualifies this one.
    fn previous_of(&self, n: usize, case: &CaseData) -> Option<Vec<Vec<u32>>> {
        let Item::Indicator(indicator) = &self.request.items[n] else {
            return None;
        };
        let rule = indicator.previous_case.as_ref()?;
        let slot = self.with_previous.iter().position(|&i| i == n)?;
        let earlier = self
            .earlier
            .get(&case.child_key)?
            .iter()
            .filter(|e| e.opened_at < case.opened_at)
            .filter(|e| e.qualifies[slot].is_some())
            .max_by_key(|e| e.opened_at)?;
        let date = earlier.qualifies[slot]?;
        let window_end = self.calendar.local_date(self.calendar.due(
            Moment {
                at: self.calendar.start_of(date),
                date_only: true,
            },
            rule.within,
        ));
        (date <= case.opened && case.opened <= window_end).then(|| earlier.values.clone())
    }

    /// The cases of children with more than one case, for `previous_case`.
    fn load_earlier(&mut self, conn: &mut DbConnection, facts: &HashSet<String>) -> AppResult<()> {
        let request = self.request;
        let spec = projection::spec(&request.programme);
        let mut earlier: HashMap<String, Vec<Earlier>> = HashMap::new();
        let readmitted: Vec<String> = cases::table
            .filter(cases::programme.eq(&request.programme.id))
            .filter(cases::admission.gt(0))
            .filter(cases::merged_into.is_null())
            .select(cases::child_id)
            .distinct()
            .load::<Option<String>>(conn)?
            .into_iter()
            .flatten()
            .collect();
        let previous_dims: Vec<String> = request
            .by
            .iter()
            .filter_map(|(_, d)| match d {
                Dimension::PreviousCaseFact(f) => Some(f.clone()),
                _ => None,
            })
            .collect();
        for chunk in readmitted.chunks(PAGE as usize) {
            type EarlierRow = (
                String,
                Option<String>,
                Option<NaiveDateTime>,
                Option<String>,
                Option<String>,
            );
            let rows: Vec<EarlierRow> = cases::table
                .left_join(indicator_cases::table)
                .filter(cases::child_id.eq_any(chunk))
                .filter(cases::merged_into.is_null())
                .select((
                    cases::id,
                    cases::child_id,
                    cases::opened_at,
                    indicator_cases::spec.nullable(),
                    indicator_cases::facts.nullable(),
                ))
                .load(conn)?;
            let stale: Vec<&str> = rows
                .iter()
                .filter(|r| r.3.as_deref() != Some(spec.id.as_str()))
                .map(|r| r.0.as_str())
                .collect();
            let mut old = unprojected(conn, &stale)?;
            for (id, child, opened_at, _, projected) in rows {
                let (Some(child), Some(opened_at)) = (child, opened_at) else {
                    continue;
                };
                let text = match old.remove(&id) {
                    Some((facts, ..)) => facts,
                    None => projected.unwrap_or_default(),
                };
                let case_facts: HashMap<String, Value> =
                    partial::entries(&text, facts).unwrap_or_default();
                let data = CaseData {
                    serial: 0,
                    child: 0,
                    child_key: child.clone(),
                    site_id: String::new(),
                    admission: 0,
                    opened_at,
                    opened: self.calendar.local_date(opened_at.and_utc()),
                    closed: None,
                    facts: case_facts,
                    events: HashMap::new(),
                    records: HashMap::new(),
                };
                let qualifies = self
                    .with_previous
                    .iter()
                    .map(|&n| match &request.items[n] {
                        Item::Indicator(Indicator {
                            previous_case: Some(p),
                            ..
                        }) if data.holds(&p.filter) => data.date_fact(&p.date),
                        _ => None,
                    })
                    .collect();
                let values = previous_dims
                    .iter()
                    .map(|f| self.fact_values(data.facts.get(f)))
                    .collect();
                earlier.entry(child).or_default().push(Earlier {
                    opened_at,
                    qualifies,
                    values,
                });
            }
        }
        self.earlier = std::sync::Arc::new(earlier);
        Ok(())
    }

    /// The cells as rows, each item and period with its grand total even
    /// when nothing counted, in item, period and value order.
    fn rows(mut self) -> Vec<Row> {
        let dims = self.request.by.len();
        for n in 0..self.request.items.len() {
            for p in 0..self.request.periods.len() {
                self.cells
                    .entry((n as u32, p as u32, [TOTAL_ID; MAX_DIMS]))
                    .or_default();
            }
        }
        let names = &self.strings.names;
        // Totals first, then values in alphabetical order.
        type Sorted<'a> = (u32, u32, Vec<(bool, &'a str)>);
        let mut sorted: BTreeMap<Sorted, Cell> = BTreeMap::new();
        for ((n, p, values), cell) in self.cells {
            let order = values[..dims]
                .iter()
                .map(|&v| (v != TOTAL_ID, names[v as usize].as_str()))
                .collect();
            sorted.insert((n, p, order), cell);
        }
        sorted
            .into_iter()
            .map(|((n, p, values), mut cell)| {
                cell.children.sort_unstable();
                cell.children.dedup();
                let item = &self.request.items[n as usize];
                let ratio = !matches!(item, Item::Indicator(i) if i.ratio.is_none());
                Row {
                    item: n as usize,
                    period: p as usize,
                    values: values.iter().map(|(_, v)| v.to_string()).collect(),
                    cases: cell.cases,
                    children: cell.children.len() as u64,
                    numerator: ratio.then_some(cell.numerator),
                    denominator: ratio.then_some(cell.denominator),
                    median_delay_hours: matches!(item, Item::Timeliness(_))
                        .then(|| median(&mut cell.delays_hours))
                        .flatten(),
                    median_delay_days: matches!(item, Item::Timeliness(_))
                        .then(|| median(&mut cell.delays_days))
                        .flatten(),
                    suppression: None,
                }
            })
            .collect()
    }
}

/// Calls `add` with the key of every cell a case with `dims` values counts
/// in: each combination of one of its values or the total per breakdown.
fn each_cell(n: usize, p: usize, dims: &[Vec<u32>], mut add: impl FnMut(Key)) {
    let mut choice = [TOTAL_ID; MAX_DIMS];
    fn walk(
        at: usize,
        dims: &[Vec<u32>],
        choice: &mut [u32; MAX_DIMS],
        key: (u32, u32),
        add: &mut dyn FnMut(Key),
    ) {
        if at == dims.len() {
            add((key.0, key.1, *choice));
            return;
        }
        choice[at] = TOTAL_ID;
        walk(at + 1, dims, choice, key, add);
        for &v in &dims[at] {
            choice[at] = v;
            walk(at + 1, dims, choice, key, add);
        }
        choice[at] = TOTAL_ID;
    }
    walk(0, dims, &mut choice, (n as u32, p as u32), &mut add);
}

/// The periods in which `indicator` looks at `case`.
fn periods_of(indicator: &Indicator, case: &CaseData, periods: &[Period]) -> Vec<usize> {
    let mut out: Vec<usize> = match &indicator.period {
        PeriodBy::Opened => index_of(periods, case.opened).into_iter().collect(),
        PeriodBy::Closed => case
            .closed
            .and_then(|d| index_of(periods, d))
            .into_iter()
            .collect(),
        PeriodBy::Active => periods
            .iter()
            .enumerate()
            .filter(|(_, p)| case.opened <= p.last && case.closed.is_none_or(|c| c >= p.first))
            .map(|(i, _)| i)
            .collect(),
        PeriodBy::Event(e) => case
            .events
            .get(e)
            .into_iter()
            .flat_map(|days| days.iter())
            .filter_map(|d| index_of(periods, *d))
            .collect(),
        PeriodBy::Fact(f) => case
            .date_fact(f)
            .and_then(|d| index_of(periods, d))
            .into_iter()
            .collect(),
    };
    out.dedup();
    out
}

fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    let m = if values.len() % 2 == 0 {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    };
    Some((m * 10.0).round() / 10.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_case_counts_in_each_combination_of_its_values_and_the_totals() {
        let mut keys = Vec::new();
        each_cell(0, 0, &[vec![5], vec![7, 8]], |k| keys.push(k.2));
        assert_eq!(
            keys,
            vec![
                [0, 0, 0],
                [0, 7, 0],
                [0, 8, 0],
                [5, 0, 0],
                [5, 7, 0],
                [5, 8, 0]
            ]
        );
    }

    #[test]
    fn medians() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&mut [4.0, 1.0]), Some(2.5));
    }
    /// A KZ report by sex and age band over 2026, quarter by quarter.
    fn kz_report() -> Request {
        let programme = crate::programmes::Programmes::shipped()
            .get("kz")
            .cloned()
            .expect("KZ is shipped");
        let catalogue = &programme.indicators;
        let (from, to) = (
            NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
            NaiveDate::from_ymd_opt(2026, 12, 31).unwrap(),
        );
        Request {
            from,
            to,
            grain: super::super::periods::Grain::Quarter,
            periods: super::super::periods::split(from, to, super::super::periods::Grain::Quarter)
                .unwrap(),
            by: ["sex", "age_band"]
                .iter()
                .map(|n| (n.to_string(), catalogue.dimension(n).unwrap().clone()))
                .collect(),
            items: catalogue
                .list
                .iter()
                .cloned()
                .map(Item::Indicator)
                .collect(),
            site_ids: vec!["site".into()],
            site_codes: Default::default(),
            suppressed: false,
            threshold: 0,
            programme: programme.clone(),
        }
    }

    /// The `n`th of some cases: seven children, both sexes, several ages,
    /// a month each, some separated.
    fn case(calendar: &Calendar, n: u32) -> Parsed {
        let opened_at = NaiveDate::from_ymd_opt(2026, n % 12 + 1, 10)
            .unwrap()
            .and_hms_opt(9, 0, 0)
            .unwrap();
        let mut facts: HashMap<String, Value> = HashMap::new();
        facts.insert(
            "child.sex".into(),
            ["female", "male"][n as usize % 2].into(),
        );
        facts.insert(
            "child.date_of_birth".into(),
            format!("20{:02}-03-01", 10 + n % 8).into(),
        );
        if n % 4 == 0 {
            facts.insert("child.separation_status".into(), "separated".into());
        }
        Parsed {
            case: CaseData {
                serial: 0,
                child: 0,
                child_key: format!("child-{}", n % 7),
                site_id: "site".into(),
                admission: i32::from(n % 3 == 0),
                opened_at,
                opened: calendar.local_date(opened_at.and_utc()),
                closed: None,
                facts,
                events: HashMap::new(),
                records: HashMap::new(),
            },
            deadlines: Vec::new(),
        }
    }

    #[test]
    fn cases_counted_on_several_threads_add_up_to_the_same_report() {
        let request = kz_report();
        let calendar = &request.programme.calendar;
        let now = Utc::now();
        let mut alone = Counter::new(&request, now);
        for n in 0..60 {
            alone.count_case(case(calendar, n));
        }
        let alone = alone.rows();

        let mut base = Counter::new(&request, now);
        let (mut first, mut second) = (base.fork(), base.fork());
        // The second thread meets the values in another order, so its
        // strings and children have other numbers.
        for n in (0..60).rev() {
            let counter = if n % 3 == 0 { &mut first } else { &mut second };
            counter.count_case(case(calendar, n));
        }
        base.merge(first);
        base.merge(second);
        let together = base.rows();

        assert_eq!(alone, together);
        let total = alone
            .iter()
            .find(|r| r.item == 0 && r.values.iter().all(|v| v == TOTAL) && r.cases > 0)
            .expect("cases counted in the first indicator");
        assert!(total.children < total.cases, "{total:?}");
        assert!(alone
            .iter()
            .any(|r| r.values.contains(&"female".to_string()) && r.cases > 0));
    }
}
