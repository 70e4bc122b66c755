//! A form's submissions as CSV: one row per current submission.

use std::collections::HashMap;

use chrono::{NaiveDate, NaiveDateTime};
use diesel::dsl::sql;
use diesel::expression::SqlLiteral;
use diesel::prelude::*;
use diesel::sql_types::{Nullable, Text};
use serde::Deserialize;
use serde_json::Value;

use super::flatten::{Cells, Flattener};
use super::pseudonym::{Kind, Pseudonyms};
use super::{
    day_range, disclosure, export_sites, header_chunk, narrowed_case, privacy, push_cell,
    push_utc_text, Chunk, Formulas, Scope,
};
use crate::auth::sites;
use crate::cases::reconcile::programme_of;
use crate::db::schema::{form_versions, forms, submissions, users};
use crate::db::DbConnection;
use crate::error::{AppError, AppResult};
use crate::forms::columns::{self, Column, Layout, Privacy, RepeatTable};
use crate::forms::model;
use crate::privacy::disclosures::{self, Checked, DisclosureTerms};
use crate::submissions::cells::{self, Mapping, Record, StoredRecord};
use crate::submissions::repeats;

/// Filters of a form export (`?from=&to=…`), and the terms of an
/// identifying one beside them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct FormFilter {
    /// Received on or after this day (UTC).
    pub from: Option<NaiveDate>,
    /// Received on or before this day (UTC).
    pub to: Option<NaiveDate>,
    /// Site code.
    pub site: Option<String>,
    pub version: Option<String>,
    /// Start with a byte-order mark, for Excel.
    pub bom: Option<bool>,
    /// `true` for names and other direct identifiers (coordinators only,
    /// on a legal basis, to a recipient, with a purpose).
    pub identifying: Option<bool>,
    /// Only this case (its id). A disclosure by consent is of one case.
    pub case: Option<String>,
    /// An identifying export's terms, read beside the filters
    /// (`disclosures::with_terms`).
    #[serde(skip)]
    pub terms: DisclosureTerms,
    /// `false`: cells a spreadsheet would run as formulas are written as
    /// they are (for scripts; recorded on the audit row).
    pub formula_escape: Option<bool>,
}

impl<'de> Deserialize<'de> for FormFilter {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // `FormFilter::deserialize` is the derive's (`remote = "Self"`).
        let (filter, terms) = disclosures::with_terms(deserializer, FormFilter::deserialize)?;
        Ok(FormFilter { terms, ..filter })
    }
}

/// What an export will write, decided before the first byte is sent.
#[derive(Debug, Clone)]
pub struct FormExport {
    pub form_id: String,
    pub privacy: Privacy,
    /// An identifying export's checked terms, to be logged before it runs.
    pub disclosure: Option<Checked>,
    /// Whether formulas are neutralised (`sheet`).
    pub formulas: Formulas,
    /// De-identified: this export's names for cases and submissions.
    pseudonyms: Option<Pseudonyms>,
    case_id: Option<String>,
    pub columns: Vec<Column>,
    /// The repeat groups' own files (the `.zip` export).
    pub repeats: Vec<RepeatTable>,
    /// Version → how its stored record becomes the columns.
    mappings: HashMap<String, Mapping>,
    /// Which of the stored records the pages read.
    read: Privacy,
    /// Reads the columns' cells from the envelope's text, for submissions
    /// stored without cells (or with another release's layout).
    flattener: Flattener,
    occurred_at_pointer: String,
    time_zone: chrono_tz::Tz,
    site_ids: Vec<String>,
    site_codes: HashMap<String, String>,
    from: Option<NaiveDateTime>,
    to: Option<NaiveDateTime>,
    version: Option<String>,
    bom: bool,
}

const META: [&str; 9] = [
    "instance_id",
    "case_number",
    "site",
    "form_version",
    "submitted_by",
    "device_id",
    "started_at",
    "completed_at",
    "received_at",
];

impl FormExport {
    /// The sites whose rows it carries.
    pub fn site_ids(&self) -> &[String] {
        &self.site_ids
    }

    /// Its columns' names, for the disclosure log (KZ P3: what went).
    pub fn column_names(&self) -> Vec<String> {
        META.iter()
            .map(|m| m.to_string())
            .chain(self.columns.iter().map(Column::header))
            .collect()
    }
}

/// Checks the export is allowed and works out its columns.
pub fn plan(
    conn: &mut DbConnection,
    scope: &Scope,
    form_id: &str,
    filter: &FormFilter,
) -> AppResult<FormExport> {
    let privacy = privacy(scope, filter.identifying)?;
    let programme: String = forms::table
        .find(form_id)
        .select(forms::programme)
        .first(conn)
        .optional()?
        .ok_or_else(|| AppError::NotFound(format!("no form {form_id:?}")))?;
    let mut documents: Vec<(String, String)> = form_versions::table
        .filter(form_versions::form_id.eq(form_id))
        .select((form_versions::version, form_versions::document))
        .load(conn)?;
    // Newest first: its order leads; older versions add what it dropped.
    documents.sort_by_key(|d| std::cmp::Reverse(version_key(&d.0)));
    let mut versions = Vec::new();
    let mut version_ids = Vec::new();
    let mut occurred_at_pointer = String::new();
    for (i, (version, document)) in documents.iter().enumerate() {
        version_ids.push(version.clone());
        let document: Value = serde_json::from_str(document).map_err(AppError::internal)?;
        if i == 0 {
            occurred_at_pointer = model::meta(&document)
                .map(|m| m.occurred_at)
                .unwrap_or_default();
        }
        versions.push(model::fields(&document));
    }
    let (from, to) = day_range(filter.from, filter.to);
    let all_sites = sites::list(conn, None)?;
    let site_ids = export_sites(&all_sites, scope, &programme, filter.site.as_deref())?;
    let case = narrowed_case(conn, &site_ids, filter.case.as_deref())?;
    let disclosure = disclosure(conn, privacy, &programme, case.as_ref(), &filter.terms)?;
    let time_zone = programme_of(&programme)?.calendar.time_zone;
    let columns = columns::columns(&versions, privacy);
    let layouts: Vec<Layout> = versions.iter().map(|fields| Layout::of(fields)).collect();
    // The de-identified records serve only when every version's is the
    // export's columns; else all rows map the identifying ones.
    let read = if layouts.iter().all(|l| l.columns(privacy) == columns) {
        privacy
    } else {
        Privacy::Identifying
    };
    let mappings = version_ids
        .into_iter()
        .zip(&layouts)
        .map(|(v, layout)| (v, Mapping::new(&columns, layout, read)))
        .collect();
    Ok(FormExport {
        mappings,
        read,
        form_id: form_id.to_string(),
        privacy,
        disclosure,
        formulas: Formulas::from_param(filter.formula_escape),
        pseudonyms: match privacy {
            Privacy::Deidentified => Some(Pseudonyms::new()?),
            Privacy::Identifying => None,
        },
        case_id: case.map(|c| c.id),
        flattener: Flattener::new(&columns, &occurred_at_pointer, time_zone),
        columns,
        repeats: columns::repeat_tables(&versions, privacy),
        occurred_at_pointer,
        time_zone,
        site_ids,
        site_codes: all_sites.into_iter().map(|s| (s.id, s.code)).collect(),
        from,
        to,
        version: filter.version.clone(),
        bom: filter.bom == Some(true),
    })
}

/// `2021.11` after `2021.9`: numeric parts compare as numbers.
fn version_key(v: &str) -> Vec<(u64, String)> {
    v.split('.')
        .map(|part| (part.parse().unwrap_or(u64::MAX), part.to_string()))
        .collect()
}

/// One row of a page as the database hands it over: times as their
/// stored text, the case's number and site, the stored record if any.
#[derive(Queryable)]
struct PageRow {
    instance_id: String,
    version: String,
    case_id: Option<String>,
    case_number: Option<String>,
    site_id: String,
    username: Option<String>,
    device_id: String,
    started_at: Option<String>,
    completed_at: String,
    received_at: String,
}

/// Instance id → its stored record; then → its envelope, for the rows
/// whose stored record will not do.
#[derive(Default)]
struct Answers {
    stored: foldhash::HashMap<String, StoredRecord>,
    envelopes: foldhash::HashMap<String, String>,
}

const PAGE: i64 = 1000;

/// The stored text of a time column (see `push_utc_text`).
fn time_text(column: &'static str) -> SqlLiteral<Text> {
    sql::<Text>(&format!("CAST(submissions.{column} AS TEXT)"))
}

/// Hands `each` the export's submissions a page at a time, with the
/// case number, site and username of each (and the connection back, to
/// read more); stops when `each` says so.
fn for_each_page(
    conn: &mut DbConnection,
    export: &FormExport,
    mut each: impl FnMut(&mut DbConnection, Vec<PageRow>) -> AppResult<bool>,
) -> AppResult<u64> {
    let mut after: Option<(NaiveDateTime, String)> = None;
    let mut written = 0;
    loop {
        // The case's site and number are the submission's copies (kept in
        // step on readmission and merge), so a page reads one index and no
        // row's case is looked up; the user is joined by key.
        let mut query = submissions::table
            .left_join(users::table.on(users::id.eq(submissions::submitted_by)))
            .filter(submissions::form_id.eq(&export.form_id))
            .filter(submissions::superseded_by.is_null())
            .filter(submissions::site_id.eq_any(&export.site_ids))
            .into_boxed();
        if let Some(from) = export.from {
            query = query.filter(submissions::received_at.ge(from));
        }
        if let Some(to) = export.to {
            query = query.filter(submissions::received_at.lt(to));
        }
        if let Some(v) = &export.version {
            query = query.filter(submissions::form_version.eq(v));
        }
        if let Some(case) = &export.case_id {
            query = query.filter(submissions::case_id.eq(case));
        }
        if let Some((at, id)) = &after {
            // `>=` first: a range the index can seek to, so each page
            // starts where the last ended instead of scanning from the top.
            query = query.filter(submissions::received_at.ge(*at)).filter(
                submissions::received_at
                    .gt(*at)
                    .or(submissions::instance_id.gt(id.clone())),
            );
        }
        let rows: Vec<PageRow> = query
            .order((submissions::received_at, submissions::instance_id))
            .limit(PAGE)
            .select((
                submissions::instance_id,
                submissions::form_version,
                submissions::case_id,
                submissions::case_number,
                submissions::site_id.assume_not_null(),
                users::username.nullable(),
                submissions::device_id,
                sql::<Nullable<Text>>("CAST(submissions.started_at AS TEXT)"),
                time_text("completed_at"),
                time_text("received_at"),
            ))
            .load(conn)?;
        let Some(last) = rows.last() else { break };
        after = Some((stored_time(&last.received_at)?, last.instance_id.clone()));
        written += rows.len() as u64;
        let last_page = (rows.len() as i64) < PAGE;
        if !each(conn, rows)? || last_page {
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

/// The answers of a page's rows: their stored records, and the envelopes
/// of the rows whose stored record will not do.
fn answers(conn: &mut DbConnection, export: &FormExport, rows: &[PageRow]) -> AppResult<Answers> {
    let mut answers = Answers::default();
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        return Ok(answers);
    };
    // One range of their table, which is ordered like the pages
    // (cheaper than a seek a row).
    answers.stored = cells::in_range(
        conn,
        &export.form_id,
        export.read,
        stored_time(&first.received_at)?,
        stored_time(&last.received_at)?,
    )?
    .into_iter()
    .collect();
    let needing: Vec<&str> = rows
        .iter()
        .filter(|r| export.stored(r, &answers).is_none())
        .map(|r| r.instance_id.as_str())
        .collect();
    if !needing.is_empty() {
        answers.envelopes = submissions::table
            .filter(submissions::instance_id.eq_any(&needing))
            .select((submissions::instance_id, submissions::payload))
            .load::<(String, String)>(conn)?
            .into_iter()
            .collect();
    }
    Ok(answers)
}

impl FormExport {
    /// The local day the form's event happened (for ages), else the day
    /// it was completed.
    fn event_day(&self, data: &Value, completed: NaiveDate) -> Option<NaiveDate> {
        data.pointer(&self.occurred_at_pointer)
            .and_then(Value::as_str)
            .and_then(|t| super::event_day(t, self.time_zone))
            .or(Some(completed))
    }

    /// The row's stored record and how it makes the row's cells, if it
    /// can (else the row's envelope is read).
    fn stored<'a>(
        &'a self,
        row: &PageRow,
        answers: &'a Answers,
    ) -> Option<(&'a StoredRecord, &'a Mapping)> {
        let stored = answers.stored.get(&row.instance_id)?;
        let mapping = self.mappings.get(&row.version)?;
        mapping.accepts(&stored.0).then_some((stored, mapping))
    }
}

/// The UTC day of a stored time's text (the envelope path's fallback for
/// a form's event day).
fn day_of(stored: &str) -> AppResult<NaiveDate> {
    stored
        .get(..10)
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| AppError::internal(format!("export: a stored time {stored:?}")))
}

/// Writes the export a page at a time into `sink`; stops early when the
/// sink says the reader has gone. Returns the number of rows written.
///
/// Two cores' worth: this thread reads the pages while a second one
/// writes the last page as CSV. Given a second connection, that second
/// thread also reads the page's answers with it (about half the reading).
pub fn write(
    conn: &mut DbConnection,
    second: Option<&mut DbConnection>,
    export: &FormExport,
    mut sink: impl FnMut(Vec<u8>) -> bool + Send,
) -> AppResult<u64> {
    let header: Vec<String> = META
        .iter()
        .map(|m| m.to_string())
        .chain(export.columns.iter().map(Column::header))
        .collect();
    if !sink(header_chunk(&header, export.bom)?) {
        return Ok(0);
    }
    let answers_here = second.is_none();
    std::thread::scope(|scope| {
        let (pages, received) = std::sync::mpsc::sync_channel::<(Vec<PageRow>, Option<Answers>)>(2);
        let writer = scope.spawn(move || -> AppResult<()> {
            let mut second = second;
            let mut scratch = Scratch::default();
            for (rows, page_answers) in received {
                let page_answers = match (page_answers, second.as_deref_mut()) {
                    (Some(read), _) => read,
                    (None, Some(conn)) => answers(conn, export, &rows)?,
                    (None, None) => unreachable!("the reader reads them without a second"),
                };
                if !sink(page_csv(export, &rows, &page_answers, &mut scratch)?) {
                    break;
                }
            }
            Ok(())
        });
        let read = for_each_page(conn, export, |conn, rows| {
            let page_answers = if answers_here {
                Some(answers(conn, export, &rows)?)
            } else {
                None
            };
            // A closed channel: the writer stopped (the reader has gone).
            Ok(pages.send((rows, page_answers)).is_ok())
        });
        drop(pages);
        let written = writer
            .join()
            .map_err(|_| AppError::internal("export: the CSV writer panicked"))?;
        written?;
        read
    })
}

/// What the CSV writer reuses from row to row.
#[derive(Default)]
struct Scratch {
    cells: Cells,
    record: Record,
}

/// One page of the form's CSV, written by hand (`push_cell`) so each
/// stored record is copied in whole.
fn page_csv(
    export: &FormExport,
    rows: &[PageRow],
    answers: &Answers,
    scratch: &mut Scratch,
) -> AppResult<Vec<u8>> {
    let mut out = Vec::with_capacity(rows.len() * 1024);
    for row in rows {
        let site = export
            .site_codes
            .get(&row.site_id)
            .map_or("", String::as_str);
        // De-identified: the submission and its case by this export's
        // pseudonyms, times by their day.
        match &export.pseudonyms {
            Some(names) => {
                names.push(&mut out, Kind::Submission, &row.instance_id);
                out.push(b',');
                names.push(
                    &mut out,
                    Kind::Case,
                    row.case_id.as_deref().unwrap_or_default(),
                );
            }
            None => {
                push_cell(&mut out, row.instance_id.as_bytes(), export.formulas);
                out.push(b',');
                let number = row.case_number.as_deref().unwrap_or_default();
                push_cell(&mut out, number.as_bytes(), export.formulas);
            }
        }
        let meta: [&str; 4] = [
            site,
            &row.version,
            row.username.as_deref().unwrap_or_default(),
            &row.device_id,
        ];
        for field in meta {
            out.push(b',');
            push_cell(&mut out, field.as_bytes(), export.formulas);
        }
        for time in [
            row.started_at.as_deref(),
            Some(&row.completed_at),
            Some(&row.received_at),
        ] {
            out.push(b',');
            if let Some(time) = time {
                push_utc_text(&mut out, time, export.privacy, export.formulas);
            }
        }
        if let Some(((_, day, record), mapping)) = export.stored(row, answers) {
            mapping.write(record, day, export.formulas, &mut out, &mut scratch.record);
        } else {
            let envelope = answers.envelopes.get(&row.instance_id).ok_or_else(|| {
                AppError::internal(format!("export: no envelope for {}", row.instance_id))
            })?;
            export
                .flattener
                .fill(envelope, day_of(&row.completed_at)?, &mut scratch.cells)
                .map_err(AppError::internal)?;
            for cell in &scratch.cells.cells {
                out.push(b',');
                push_cell(&mut out, cell.as_bytes(), export.formulas);
            }
        }
        out.push(b'\n');
    }
    Ok(out)
}

/// Writes the file of one repeat group (`export.repeats[table]`): one row
/// per item, then PARENT_KEY and KEY to join it to its parent's file. The
/// items come from the repeat groups ingest stored beside each submission
/// (`submissions::repeats`: one range a page), else from its envelope.
///
/// Two cores' worth, as [`write`]: this thread reads each page's stored
/// groups while a second parses the last page's and writes its rows.
pub fn write_repeat(
    conn: &mut DbConnection,
    export: &FormExport,
    table: usize,
    mut sink: impl FnMut(Vec<u8>) -> bool + Send,
) -> AppResult<u64> {
    let table = &export.repeats[table];
    let header: Vec<String> = table
        .columns
        .iter()
        .map(Column::header)
        .chain(["PARENT_KEY".to_string(), "KEY".to_string()])
        .collect();
    if !sink(header_chunk(&header, export.bom)?) {
        return Ok(0);
    }
    // The places a stored row must hold to stand for the envelope here.
    let mut needed = vec![repeats::place_of_group(&table.path)];
    if !export.occurred_at_pointer.is_empty() {
        needed.push(repeats::place_of_pointer(&export.occurred_at_pointer));
    }
    let needed = &needed;
    let mut holds: HashMap<String, bool> = HashMap::new();
    std::thread::scope(|scope| {
        // A page's rows, and each row's groups as stored (or cut from its
        // envelope) by instance id.
        type RepeatPage = (Vec<PageRow>, foldhash::HashMap<String, String>);
        let (pages, received) = std::sync::mpsc::sync_channel::<RepeatPage>(2);
        let writer = scope.spawn(move || -> AppResult<u64> {
            let mut items = 0;
            for (rows, answers) in received {
                let mut out = Chunk::new(export.formulas);
                for row in &rows {
                    let instance_id = &row.instance_id;
                    // The keys join this file to the main one: by the same
                    // pseudonym when de-identified.
                    let key_root = match &export.pseudonyms {
                        Some(names) => names.of(Kind::Submission, instance_id),
                        None => instance_id.clone(),
                    };
                    let text = answers.get(instance_id).ok_or_else(|| {
                        AppError::internal(format!("export: no envelope for {instance_id}"))
                    })?;
                    let data = repeats::parse_places(text, needed).map_err(AppError::internal)?;
                    let event_day = export.event_day(&data, day_of(&row.completed_at)?);
                    for (parent, key, item) in columns::repeat_items(&data, &table.path, &key_root)
                    {
                        let mut record: Vec<String> = table
                            .columns
                            .iter()
                            .map(|c| columns::cell(c, item, event_day))
                            .collect();
                        record.extend([parent, key]);
                        out.record(&record)?;
                        items += 1;
                    }
                }
                if !sink(out.bytes()?) {
                    break;
                }
            }
            Ok(items)
        });
        let read = for_each_page(conn, export, |conn, rows| {
            let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
                return Ok(true);
            };
            let mut answers: foldhash::HashMap<String, String> = repeats::in_range(
                conn,
                &export.form_id,
                stored_time(&first.received_at)?,
                stored_time(&last.received_at)?,
            )?
            .into_iter()
            .filter(|(_, (kept, _))| {
                *holds
                    .entry(kept.clone())
                    .or_insert_with(|| repeats::holds(kept, needed))
            })
            .map(|(instance_id, (_, data))| (instance_id, data))
            .collect();
            let needing: Vec<&str> = rows
                .iter()
                .map(|r| r.instance_id.as_str())
                .filter(|id| !answers.contains_key(*id))
                .collect();
            if !needing.is_empty() {
                for (instance_id, payload) in submissions::table
                    .filter(submissions::instance_id.eq_any(&needing))
                    .select((submissions::instance_id, submissions::payload))
                    .load::<(String, String)>(conn)?
                {
                    // Cut as a stored row is, then read as one.
                    let envelope: Value =
                        serde_json::from_str(&payload).map_err(AppError::internal)?;
                    let cut = repeats::stored(needed, &envelope["data"]);
                    answers.insert(instance_id, cut.data);
                }
            }
            // A closed channel: the writer stopped (the reader has gone).
            Ok(pages.send((rows, answers)).is_ok())
        });
        drop(pages);
        let items = writer
            .join()
            .map_err(|_| AppError::internal("export: the repeat writer panicked"))??;
        read?;
        Ok(items)
    })
}
