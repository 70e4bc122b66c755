//! The case export: one row per case — number, site, state, dates, how its
//! deadlines went, and every fact of the programme (de-identified as the
//! form exports are: the facts take the class of the fields that set them,
//! `columns::treatment`; the case by this export's pseudonym, its times by
//! their day). Streamed a thousand cases at a time.

use std::collections::HashMap;
use std::io::Write;

use chrono::{NaiveDate, NaiveDateTime, Utc};
use diesel::dsl::sql;
use diesel::expression::SqlLiteral;
use diesel::prelude::*;
use diesel::sql_types::{Nullable, Text};
use serde::Deserialize;
use serde_json::Value;

use super::pseudonym::{Kind, Pseudonyms};
use super::{
    day_range, disclosure, export_sites, header_chunk, narrowed_case, privacy, push_cell,
    push_utc_text, Formulas, Privacy, Scope,
};
use crate::auth::sites;
use crate::cases::timeline::{self, DeadlineTally};
use crate::db::schema::{cases, users};
use crate::db::DbConnection;
use crate::error::{AppError, AppResult};
use crate::forms::columns::{treatment, Treatment};
use crate::forms::model::FieldKind;
use crate::privacy::disclosures::{self, Checked, DisclosureTerms};
use crate::programmes::Programmes;
use crate::time::age_in_years;

/// Filters of a case export (`?programme=kz&from=…`), and the terms of an
/// identifying one beside them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct CaseFilter {
    pub programme: String,
    /// Opened on or after this day (UTC).
    pub from: Option<NaiveDate>,
    /// Opened on or before this day (UTC).
    pub to: Option<NaiveDate>,
    pub site: Option<String>,
    pub bom: Option<bool>,
    pub identifying: Option<bool>,
    /// Only this case (its id). A disclosure by consent is of one case.
    pub case: Option<String>,
    /// An identifying export's terms, read beside the filters
    /// (`disclosures::with_terms`).
    #[serde(skip)]
    pub terms: DisclosureTerms,
    /// `false`: formulas written as they are (`sheet`).
    pub formula_escape: Option<bool>,
}

impl<'de> Deserialize<'de> for CaseFilter {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // `CaseFilter::deserialize` is the derive's (`remote = "Self"`).
        let (filter, terms) = disclosures::with_terms(deserializer, CaseFilter::deserialize)?;
        Ok(CaseFilter { terms, ..filter })
    }
}

/// How a fact is written in the file.
#[derive(Debug, Clone, PartialEq)]
enum FactColumn {
    AsIs(String),
    AgeAtOpening(String),
    Month(String),
}

#[derive(Debug, Clone)]
pub struct CaseExport {
    pub programme: String,
    pub privacy: Privacy,
    /// An identifying export's checked terms, to be logged before it runs.
    pub disclosure: Option<Checked>,
    /// Whether formulas are neutralised (`sheet`).
    pub formulas: Formulas,
    /// De-identified: this export's names for cases.
    pseudonyms: Option<Pseudonyms>,
    case_id: Option<String>,
    facts: Vec<FactColumn>,
    site_ids: Vec<String>,
    site_codes: HashMap<String, String>,
    from: Option<NaiveDateTime>,
    to: Option<NaiveDateTime>,
    bom: bool,
}

const META: [&str; 15] = [
    "case_id",
    "case_number",
    "programme",
    "site",
    "state",
    "admission",
    "readmission",
    "assigned_to",
    "opened_at",
    "closed_at",
    "deadlines_met_on_time",
    "deadlines_met_late",
    "deadlines_missed",
    "deadlines_overdue",
    "deadlines_open",
];

pub fn plan(conn: &mut DbConnection, scope: &Scope, filter: &CaseFilter) -> AppResult<CaseExport> {
    let privacy = privacy(scope, filter.identifying)?;
    let programmes = Programmes::shipped();
    if programmes.get(&filter.programme).is_none() {
        return Err(AppError::invalid_field("/programme", "kz or bt"));
    }
    let vocabulary = programmes.vocabulary();
    let treatments = fact_treatments();
    let facts = vocabulary
        .programme_facts
        .get(&filter.programme)
        .into_iter()
        .flatten()
        .filter_map(|fact| {
            let fact = fact.clone();
            if privacy == Privacy::Identifying {
                return Some(FactColumn::AsIs(fact));
            }
            match treatments.get(&fact).copied().unwrap_or(Treatment::LeftOut) {
                Treatment::LeftOut => None,
                Treatment::AgeAt => Some(FactColumn::AgeAtOpening(fact)),
                Treatment::Month => Some(FactColumn::Month(fact)),
                Treatment::Kept => Some(FactColumn::AsIs(fact)),
            }
        })
        .collect();
    let (from, to) = day_range(filter.from, filter.to);
    let all_sites = sites::list(conn, None)?;
    let site_ids = export_sites(&all_sites, scope, &filter.programme, filter.site.as_deref())?;
    let case = narrowed_case(conn, &site_ids, filter.case.as_deref())?;
    let disclosure = disclosure(
        conn,
        privacy,
        &filter.programme,
        case.as_ref(),
        &filter.terms,
    )?;
    Ok(CaseExport {
        programme: filter.programme.clone(),
        privacy,
        disclosure,
        formulas: Formulas::from_param(filter.formula_escape),
        pseudonyms: match privacy {
            Privacy::Deidentified => Some(Pseudonyms::new()?),
            Privacy::Identifying => None,
        },
        case_id: case.map(|c| c.id),
        facts,
        site_ids,
        site_codes: all_sites.into_iter().map(|s| (s.id, s.code)).collect(),
        from,
        to,
        bom: filter.bom == Some(true),
    })
}

/// What a de-identified case export makes of each fact: the treatment of
/// the fields that set it (`columns::treatment`) when they all agree,
/// else left out — a fact that is a choice on one form and free text on
/// another (nationality) carries the free text too. Items and sections
/// are left out: they hold their own fields' text.
fn fact_treatments() -> &'static HashMap<String, Treatment> {
    static TREATMENTS: std::sync::OnceLock<HashMap<String, Treatment>> = std::sync::OnceLock::new();
    TREATMENTS.get_or_init(|| {
        let set = crate::forms::definitions::shipped();
        let mut out: HashMap<String, Treatment> = HashMap::new();
        for file in &set.forms {
            let Ok(bundled) = crate::forms::bundle::bundle(&file.document, &set.resources) else {
                continue;
            };
            for field in crate::forms::model::fields(&bundled) {
                let Some(fact) = &field.fact else { continue };
                let made = match field.kind {
                    FieldKind::Repeat | FieldKind::Object | FieldKind::Section => {
                        Treatment::LeftOut
                    }
                    kind => treatment(field.pii, kind, fact == "child.date_of_birth"),
                };
                out.entry(fact.clone())
                    .and_modify(|t| {
                        if *t != made {
                            *t = Treatment::LeftOut;
                        }
                    })
                    .or_insert(made);
            }
        }
        out
    })
}

impl FactColumn {
    fn fact(&self) -> &str {
        match self {
            FactColumn::AsIs(f) | FactColumn::AgeAtOpening(f) | FactColumn::Month(f) => f,
        }
    }
}

fn header(column: &FactColumn) -> String {
    match column {
        FactColumn::AsIs(f) => f.clone(),
        FactColumn::AgeAtOpening(f) => format!("{f}_age_years"),
        FactColumn::Month(f) => format!("{f}_month"),
    }
}

/// Appends a fact's value as its cell: text as it is, a list's items
/// joined by spaces, nothing for null, anything else as JSON.
fn push_fact(out: &mut Vec<u8>, value: &Value, formulas: Formulas, scratch: &mut String) {
    let text = match value {
        Value::String(s) => s.as_str(),
        Value::Null => return,
        Value::Array(items) => {
            scratch.clear();
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    scratch.push(' ');
                }
                match item.as_str() {
                    Some(s) => scratch.push_str(s),
                    None => scratch.push_str(&item.to_string()),
                }
            }
            scratch.as_str()
        }
        other => {
            *scratch = other.to_string();
            scratch.as_str()
        }
    };
    push_cell(out, text.as_bytes(), formulas);
}

/// Counts of a case's deadlines: met on time, met late, missed, overdue
/// (open past due), open.
type Counts = [u32; 5];

/// Each written fact's column, by the fact's name.
type Slots<'a> = foldhash::HashMap<&'a str, usize>;

/// The facts a case export writes, read from a case's facts (a JSON
/// object) into their columns' slots: the others are skipped as they are
/// read, not built, and no column looks its fact up by name.
struct WantedFacts<'s, 'a> {
    slots: &'s Slots<'a>,
    values: &'s mut FactValues,
}

/// A row's facts, a slot per fact column, and which slots hold one (so
/// the next row clears those, not every column's).
struct FactValues {
    slots: Vec<Option<Value>>,
    filled: Vec<usize>,
}

impl FactValues {
    fn new(columns: usize) -> FactValues {
        FactValues {
            slots: vec![None; columns],
            filled: Vec::new(),
        }
    }

    fn clear(&mut self) {
        for slot in self.filled.drain(..) {
            self.slots[slot] = None;
        }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for WantedFacts<'_, '_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for WantedFacts<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a case's facts")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match self.slots.get(key.as_ref()) {
                Some(&slot) => {
                    self.values.slots[slot] = Some(map.next_value::<Value>()?);
                    self.values.filled.push(slot);
                }
                None => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

impl CaseExport {
    /// Puts into `values` (a slot per fact column) the facts of `text` (a
    /// case's facts) that its columns write; none when the text is not a
    /// JSON object (as before: an empty row).
    fn fill_facts(slots: &Slots, text: &str, values: &mut FactValues) {
        use serde::de::DeserializeSeed;
        values.clear();
        let mut reader = serde_json::Deserializer::from_str(text);
        let read = WantedFacts {
            slots,
            values: &mut *values,
        }
        .deserialize(&mut reader)
        .and_then(|()| reader.end());
        if read.is_err() {
            values.clear();
        }
    }

    /// The sites whose cases it carries.
    pub fn site_ids(&self) -> &[String] {
        &self.site_ids
    }

    /// Its columns' names, for the disclosure log (KZ P3: what went).
    pub fn column_names(&self) -> Vec<String> {
        META.iter()
            .map(|m| m.to_string())
            .chain(self.facts.iter().map(header))
            .collect()
    }
}

/// What the case export reads of a case: not its timeline's days, nor
/// the times it does not write; its times as their stored text (parsing
/// them cost more than the rest of the row).
#[derive(Queryable)]
struct CaseRow {
    id: String,
    programme: String,
    site_id: String,
    assigned_to: Option<String>,
    state: String,
    created_at: String,
    number: Option<String>,
    admission: i32,
    facts: String,
    opened_at: Option<String>,
    closed_at: Option<String>,
    deadline_tally: Option<String>,
}

/// A page of cases with their deadlines' counts (one each, in order) and
/// their assignees' usernames, as the reading thread hands it to the
/// writing one.
struct Page {
    cases: Vec<CaseRow>,
    counts: Vec<Counts>,
    usernames: foldhash::HashMap<String, String>,
}

const PAGE: i64 = 1000;

/// The stored text of a time column, as `forms` reads them.
fn time_text(column: &'static str) -> SqlLiteral<Text> {
    sql::<Text>(&format!("CAST(cases.{column} AS TEXT)"))
}

/// Writes the export a page at a time into `sink`; stops early when the
/// sink says the reader has gone. Returns the number of rows written.
/// Two cores' worth, as `forms::write`: this thread reads the pages, a
/// second writes the last one as CSV.
pub fn write(
    conn: &mut DbConnection,
    export: &CaseExport,
    mut sink: impl FnMut(Vec<u8>) -> bool + Send,
) -> AppResult<u64> {
    let head: Vec<String> = META
        .iter()
        .map(|m| m.to_string())
        .chain(export.facts.iter().map(header))
        .collect();
    let first = header_chunk(&head, export.bom)?;
    if !sink(first) {
        return Ok(0);
    }
    std::thread::scope(|scope| {
        let (pages, received) = std::sync::mpsc::sync_channel::<Page>(2);
        let writer = scope.spawn(move || -> AppResult<()> {
            let slots: Slots = export
                .facts
                .iter()
                .enumerate()
                .map(|(slot, column)| (column.fact(), slot))
                .collect();
            let mut scratch = Scratch {
                values: FactValues::new(export.facts.len()),
                text: String::new(),
            };
            for page in received {
                if !sink(page_csv(export, &slots, &page, &mut scratch)) {
                    break;
                }
            }
            Ok(())
        });
        // A closed channel: the writer stopped (the reader has gone).
        let read = for_each_page(conn, export, |page| pages.send(page).is_ok());
        drop(pages);
        writer
            .join()
            .map_err(|_| AppError::internal("export: the CSV writer panicked"))??;
        read
    })
}

/// Hands `each` the export's cases a page at a time, with their
/// deadlines' counts and assignees; stops when `each` says so.
fn for_each_page(
    conn: &mut DbConnection,
    export: &CaseExport,
    mut each: impl FnMut(Page) -> bool,
) -> AppResult<u64> {
    let now = Utc::now().naive_utc();
    let mut after: Option<(NaiveDateTime, String)> = None;
    let mut written = 0;
    // Assignees' usernames, looked up once an export: a site's staff
    // are few, its cases many.
    let mut known_users: foldhash::HashMap<String, String> = Default::default();
    loop {
        let mut query = cases::table
            .filter(cases::programme.eq(&export.programme))
            .filter(cases::site_id.eq_any(export.site_ids.clone()))
            .filter(cases::merged_into.is_null())
            .into_boxed();
        if let Some(from) = export.from {
            query = query.filter(cases::opened_at.ge(from));
        }
        if let Some(to) = export.to {
            query = query.filter(cases::opened_at.lt(to));
        }
        if let Some(case) = &export.case_id {
            query = query.filter(cases::id.eq(case));
        }
        if let Some((at, id)) = &after {
            // `>=` first: a range the index can seek to, so each page
            // starts where the last ended instead of scanning from the top.
            query = query
                .filter(cases::created_at.ge(*at))
                .filter(cases::created_at.gt(*at).or(cases::id.gt(id.clone())));
        }
        let page: Vec<CaseRow> = query
            .order((cases::created_at, cases::id))
            .limit(PAGE)
            .select((
                cases::id,
                cases::programme,
                cases::site_id,
                cases::assigned_to,
                cases::state,
                time_text("created_at"),
                cases::number,
                cases::admission,
                cases::facts,
                sql::<Nullable<Text>>("CAST(cases.opened_at AS TEXT)"),
                sql::<Nullable<Text>>("CAST(cases.closed_at AS TEXT)"),
                cases::deadline_tally,
            ))
            .load(conn)?;
        let Some(last) = page.last() else { break };
        after = Some((stored_time(&last.created_at)?, last.id.clone()));
        let counts = deadline_counts(conn, &page, now)?;
        let unknown: Vec<&str> = page
            .iter()
            .filter_map(|c| c.assigned_to.as_deref())
            .filter(|u| !known_users.contains_key(*u))
            .collect();
        if !unknown.is_empty() {
            known_users.extend(
                users::table
                    .filter(users::id.eq_any(&unknown))
                    .select((users::id, users::username))
                    .load::<(String, String)>(conn)?,
            );
        }
        let usernames = page
            .iter()
            .filter_map(|c| c.assigned_to.as_ref())
            .filter_map(|u| Some((u.clone(), known_users.get(u)?.clone())))
            .collect();
        written += page.len() as u64;
        let last_page = (page.len() as i64) < PAGE;
        let page = Page {
            cases: page,
            counts,
            usernames,
        };
        if !each(page) || last_page {
            break;
        }
    }
    Ok(written)
}

/// The deadlines' counts of each case of a page, from the tally the fold
/// keeps on its row; for a case not folded since the tally was kept, from
/// its `case_deadlines` rows.
fn deadline_counts(
    conn: &mut DbConnection,
    page: &[CaseRow],
    now: NaiveDateTime,
) -> AppResult<Vec<Counts>> {
    let mut tallies: Vec<Option<DeadlineTally>> = page
        .iter()
        .map(|c| {
            c.deadline_tally
                .as_deref()
                .and_then(DeadlineTally::from_text)
        })
        .collect();
    let untallied: Vec<&str> = page
        .iter()
        .zip(&tallies)
        .filter(|(_, tally)| tally.is_none())
        .map(|(c, _)| c.id.as_str())
        .collect();
    if !untallied.is_empty() {
        let mut counted = timeline::tallies_from_rows(conn, &untallied)?;
        for (case, tally) in page.iter().zip(&mut tallies) {
            if tally.is_none() {
                *tally = Some(counted.remove(&case.id).unwrap_or_default());
            }
        }
    }
    Ok(tallies
        .into_iter()
        .map(|t| t.unwrap_or_default().counts(now))
        .collect())
}

/// A time's stored text (`time_text`) as a time.
fn stored_time(text: &str) -> AppResult<NaiveDateTime> {
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
        .map_err(|e| AppError::internal(format!("export: a stored time {text:?}: {e}")))
}

/// What the CSV writer reuses from row to row.
struct Scratch {
    values: FactValues,
    text: String,
}

/// One page of the export as CSV, written by hand (`push_cell`) as the
/// form export's pages are: no cell is made a `String` of its own.
fn page_csv(export: &CaseExport, slots: &Slots, page: &Page, scratch: &mut Scratch) -> Vec<u8> {
    let formulas = export.formulas;
    let mut out = Vec::with_capacity(page.cases.len() * 512);
    for (row, case) in page.cases.iter().enumerate() {
        CaseExport::fill_facts(slots, &case.facts, &mut scratch.values);
        // De-identified: the case by this export's pseudonym (in both
        // columns), its times by their day.
        match &export.pseudonyms {
            Some(names) => {
                let start = out.len();
                names.push(&mut out, Kind::Case, &case.id);
                out.push(b',');
                out.extend_from_within(start..out.len() - 1);
            }
            None => {
                push_cell(&mut out, case.id.as_bytes(), formulas);
                out.push(b',');
                let n = case.number.as_deref().unwrap_or_default();
                push_cell(&mut out, n.as_bytes(), formulas);
            }
        }
        let site = export
            .site_codes
            .get(&case.site_id)
            .map_or("", String::as_str);
        let assignee = case
            .assigned_to
            .as_ref()
            .and_then(|u| page.usernames.get(u))
            .map_or("", String::as_str);
        let admission = case.admission.to_string();
        for cell in [
            case.programme.as_str(),
            site,
            &case.state,
            &admission,
            if case.admission > 0 { "1" } else { "0" },
            assignee,
        ] {
            out.push(b',');
            push_cell(&mut out, cell.as_bytes(), formulas);
        }
        for time in [&case.opened_at, &case.closed_at] {
            out.push(b',');
            if let Some(time) = time {
                push_utc_text(&mut out, time, export.privacy, formulas);
            }
        }
        for &count in &page.counts[row] {
            out.push(b',');
            // Into memory: cannot fail.
            let _ = write!(out, "{count}");
        }
        let opened_on = case
            .opened_at
            .as_deref()
            .and_then(|t| t.get(..10))
            .and_then(|d| d.parse::<NaiveDate>().ok());
        for (column, value) in export.facts.iter().zip(&scratch.values.slots) {
            out.push(b',');
            let Some(value) = value else { continue };
            match column {
                FactColumn::AsIs(_) => push_fact(&mut out, value, formulas, &mut scratch.text),
                FactColumn::AgeAtOpening(_) => {
                    if let Some(age) = value
                        .as_str()
                        // `%Y-%m-%d`, without a format to interpret.
                        .and_then(|d| d.parse::<NaiveDate>().ok())
                        .zip(opened_on)
                        .and_then(|(born, on)| age_in_years(born, on))
                    {
                        let _ = write!(out, "{age}");
                    }
                }
                FactColumn::Month(_) => {
                    if let Some(month) = value
                        .as_str()
                        .filter(|d| d.len() >= 7)
                        .and_then(|d| d.get(..7))
                    {
                        push_cell(&mut out, month.as_bytes(), formulas);
                    }
                }
            }
        }
        out.push(b'\n');
    }
    out
}
