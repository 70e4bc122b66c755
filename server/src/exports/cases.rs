//! The case export: one row per case — number, site, state, dates, how its
//! deadlines went, and every fact of the programme (de-identified as the
//! form exports are: the facts take the class of the fields that set them,
//! `columns::treatment`; the case by this export's pseudonym, its times by
//! their day). Streamed a thousand cases at a time.

use std::collections::{HashMap, HashSet};

use chrono::{NaiveDate, NaiveDateTime, Utc};
use diesel::dsl::sql;
use diesel::expression::SqlLiteral;
use diesel::prelude::*;
use diesel::sql_types::{Nullable, Text};
use serde::Deserialize;
use serde_json::Value;

use super::pseudonym::{Kind, Pseudonyms};
use super::{
    day_range, disclosure, export_sites, header_chunk, narrowed_case, privacy, stamp_text, Chunk,
    Formulas, Privacy, Scope,
};
use crate::auth::sites;
use crate::db::schema::{case_deadlines, cases, users};
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

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
            .collect::<Vec<_>>()
            .join(" "),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Counts of a case's deadlines: met on time, met late, missed, overdue
/// (open past due), open.
type Counts = [u32; 5];

/// The facts a case export writes, read from a case's facts (a JSON
/// object of about 4 KB): the others are skipped as they are read, not
/// built (most of a row's cost when every fact was made a `Value`).
struct WantedFacts<'a>(&'a HashSet<&'a str>);

impl<'de> serde::de::DeserializeSeed<'de> for WantedFacts<'_> {
    type Value = HashMap<String, Value>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for WantedFacts<'_> {
    type Value = HashMap<String, Value>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a case's facts")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = HashMap::with_capacity(self.0.len());
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if self.0.contains(key.as_ref()) {
                out.insert(key.into_owned(), map.next_value::<Value>()?);
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(out)
    }
}

impl CaseExport {
    /// The facts of `text` (a case's facts) that its columns write; none
    /// when the text is not a JSON object (as before: an empty row).
    fn facts_of(wanted: &HashSet<&str>, text: &str) -> HashMap<String, Value> {
        use serde::de::DeserializeSeed;
        let mut reader = serde_json::Deserializer::from_str(text);
        WantedFacts(wanted)
            .deserialize(&mut reader)
            .and_then(|facts| reader.end().map(|()| facts))
            .unwrap_or_default()
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
}

/// A page of cases with their deadlines' counts and their assignees'
/// usernames, as the reading thread hands it to the writing one.
struct Page {
    cases: Vec<CaseRow>,
    counts: foldhash::HashMap<String, Counts>,
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
            let wanted: HashSet<&str> = export.facts.iter().map(FactColumn::fact).collect();
            for page in received {
                if !sink(page_csv(export, &wanted, &page)?) {
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
            ))
            .load(conn)?;
        let Some(last) = page.last() else { break };
        after = Some((stored_time(&last.created_at)?, last.id.clone()));
        let ids: Vec<&str> = page.iter().map(|c| c.id.as_str()).collect();
        let mut counts: foldhash::HashMap<String, Counts> = Default::default();
        // Whether an open one is past due, asked of the database: no time
        // is parsed.
        for (case_id, outcome, on_time, past_due) in case_deadlines::table
            .filter(case_deadlines::case_id.eq_any(&ids))
            .select((
                case_deadlines::case_id,
                case_deadlines::outcome,
                case_deadlines::on_time,
                case_deadlines::due_at.lt(now),
            ))
            .load::<(String, String, Option<bool>, bool)>(conn)?
        {
            let slot = match (outcome.as_str(), on_time) {
                ("met", Some(true)) => 0,
                ("met", _) => 1,
                ("missed", _) => 2,
                ("open", _) if past_due => 3,
                ("open", _) => 4,
                _ => continue,
            };
            counts.entry(case_id).or_default()[slot] += 1;
        }
        let assignees: Vec<&str> = page
            .iter()
            .filter_map(|c| c.assigned_to.as_deref())
            .collect();
        let usernames = users::table
            .filter(users::id.eq_any(&assignees))
            .select((users::id, users::username))
            .load::<(String, String)>(conn)?
            .into_iter()
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

/// A time's stored text (`time_text`) as a time.
fn stored_time(text: &str) -> AppResult<NaiveDateTime> {
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
        .map_err(|e| AppError::internal(format!("export: a stored time {text:?}: {e}")))
}

/// One page of the export as CSV.
fn page_csv(export: &CaseExport, wanted: &HashSet<&str>, page: &Page) -> AppResult<Vec<u8>> {
    let mut out = Chunk::new(export.formulas);
    for case in &page.cases {
        let facts = CaseExport::facts_of(wanted, &case.facts);
        let c = page.counts.get(&case.id).copied().unwrap_or_default();
        // De-identified: the case by this export's pseudonym (in both
        // columns), its times by their day.
        let (id, number) = match &export.pseudonyms {
            Some(names) => {
                let name = names.of(Kind::Case, &case.id);
                (name.clone(), name)
            }
            None => (case.id.clone(), case.number.clone().unwrap_or_default()),
        };
        let when = |t: &Option<String>| {
            t.as_deref()
                .map(|t| stamp_text(t, export.privacy))
                .unwrap_or_default()
        };
        let opened_on = case
            .opened_at
            .as_deref()
            .and_then(|t| t.get(..10))
            .and_then(|d| d.parse::<NaiveDate>().ok());
        let mut record: Vec<String> = vec![
            id,
            number,
            case.programme.clone(),
            export
                .site_codes
                .get(&case.site_id)
                .cloned()
                .unwrap_or_default(),
            case.state.clone(),
            case.admission.to_string(),
            u8::from(case.admission > 0).to_string(),
            case.assigned_to
                .as_ref()
                .and_then(|u| page.usernames.get(u))
                .cloned()
                .unwrap_or_default(),
            when(&case.opened_at),
            when(&case.closed_at),
        ];
        record.extend(c.iter().map(u32::to_string));
        for column in &export.facts {
            record.push(match column {
                FactColumn::AsIs(f) => facts.get(f).map(text).unwrap_or_default(),
                FactColumn::AgeAtOpening(f) => facts
                    .get(f)
                    .and_then(Value::as_str)
                    .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
                    .zip(opened_on)
                    .and_then(|(born, on)| age_in_years(born, on))
                    .map(|a| a.to_string())
                    .unwrap_or_default(),
                FactColumn::Month(f) => facts
                    .get(f)
                    .and_then(Value::as_str)
                    .filter(|d| d.len() >= 7)
                    .map(|d| d[..7].to_string())
                    .unwrap_or_default(),
            });
        }
        out.record(&record)?;
    }
    out.bytes()
}
