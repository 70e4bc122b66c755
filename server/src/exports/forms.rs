//! A form's submissions as CSV: one row per current submission.

use std::collections::HashMap;

use chrono::{NaiveDate, NaiveDateTime};
use diesel::prelude::*;
use serde::Deserialize;
use serde_json::Value;

use super::columns::{self, Column, Privacy, RepeatTable};
use super::flatten::{Cells, Flattener};
use super::stored::{Layout, Mapping};
use super::{day_range, export_sites, header_chunk, privacy, utc, Chunk, Scope};
use crate::auth::sites;
use crate::cases::reconcile::programme_of;
use crate::db::schema::{cases, form_versions, forms, submission_cells, submissions, users};
use crate::db::DbConnection;
use crate::error::{AppError, AppResult};
use crate::forms::model;

/// Filters of a form export.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// with `purpose`).
    pub identifying: Option<bool>,
    pub purpose: Option<String>,
}

/// What an export will write, decided before the first byte is sent.
#[derive(Debug, Clone)]
pub struct FormExport {
    pub form_id: String,
    pub privacy: Privacy,
    pub columns: Vec<Column>,
    /// The repeat groups' own files (the `.zip` export).
    pub repeats: Vec<RepeatTable>,
    /// Version → how its stored cells become the columns.
    mappings: HashMap<String, Mapping>,
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

/// Checks the export is allowed and works out its columns.
pub fn plan(
    conn: &mut DbConnection,
    scope: &Scope,
    form_id: &str,
    filter: &FormFilter,
) -> AppResult<FormExport> {
    let privacy = privacy(scope, filter.identifying, filter.purpose.as_deref())?;
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
    let time_zone = programme_of(&programme)?.calendar.time_zone;
    let columns = columns::columns(&versions, privacy);
    let mappings = version_ids
        .into_iter()
        .zip(&versions)
        .map(|(v, fields)| (v, Mapping::new(&columns, &Layout::of(fields))))
        .collect();
    Ok(FormExport {
        mappings,
        form_id: form_id.to_string(),
        privacy,
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

type Row = (
    String,
    String,
    Option<String>,
    String,
    String,
    Option<NaiveDateTime>,
    NaiveDateTime,
    NaiveDateTime,
);

const PAGE: i64 = 1000;

/// Hands `each` the export's submissions a page at a time, with the case
/// number, site code and username of each row; stops when `each` says so.
fn for_each_page(
    conn: &mut DbConnection,
    export: &FormExport,
    all_payloads: bool,
    mut each: impl FnMut(Vec<Row>, Lookups) -> AppResult<bool>,
) -> AppResult<u64> {
    let mut after: Option<(NaiveDateTime, String)> = None;
    let mut written = 0;
    loop {
        let in_sites = cases::table
            .filter(cases::site_id.eq_any(export.site_ids.clone()))
            .select(cases::id.nullable());
        let mut query = submissions::table
            .filter(submissions::form_id.eq(&export.form_id))
            .filter(submissions::superseded_by.is_null())
            .filter(submissions::case_id.eq_any(in_sites))
            .into_boxed();
        if let Some(from) = export.from {
            query = query.filter(submissions::received_at.ge(from));
        }
        if let Some(to) = export.to {
            query = query.filter(submissions::received_at.lt(to));
        }
        if let Some(v) = &export.version {
            query = query.filter(submissions::form_version.eq(v.clone()));
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
        let rows: Vec<Row> = query
            .order((submissions::received_at, submissions::instance_id))
            .limit(PAGE)
            .select((
                submissions::instance_id,
                submissions::form_version,
                submissions::case_id,
                submissions::submitted_by,
                submissions::device_id,
                submissions::started_at,
                submissions::completed_at,
                submissions::received_at,
            ))
            .load(conn)?;
        let Some(last) = rows.last() else { break };
        after = Some((last.7, last.0.clone()));
        let case_ids: Vec<&str> = rows.iter().filter_map(|r| r.2.as_deref()).collect();
        let cases: HashMap<String, (Option<String>, String)> = cases::table
            .filter(cases::id.eq_any(&case_ids))
            .select((cases::id, cases::number, cases::site_id))
            .load::<(String, Option<String>, String)>(conn)?
            .into_iter()
            .map(|(id, number, site)| (id, (number, site)))
            .collect();
        let user_ids: Vec<&str> = rows.iter().map(|r| r.3.as_str()).collect();
        let usernames: HashMap<String, String> = users::table
            .filter(users::id.eq_any(&user_ids))
            .select((users::id, users::username))
            .load::<(String, String)>(conn)?
            .into_iter()
            .collect();
        // The page's cells: one range of the cells table, in key order.
        let first = rows.first().map_or(last.7, |r| r.7);
        let cells: HashMap<String, String> = if all_payloads {
            HashMap::new()
        } else {
            submission_cells::table
                .filter(submission_cells::form_id.eq(&export.form_id))
                .filter(submission_cells::received_at.ge(first))
                .filter(submission_cells::received_at.le(last.7))
                .select((submission_cells::instance_id, submission_cells::cells))
                .load::<(String, String)>(conn)?
                .into_iter()
                .collect()
        };
        // The envelope only where the stored cells will not do.
        let needing: Vec<&str> = rows
            .iter()
            .filter(|r| {
                all_payloads
                    || !cells.get(&r.0).is_some_and(|text| {
                        export.mappings.get(&r.1).is_some_and(|m| m.accepts(text))
                    })
            })
            .map(|r| r.0.as_str())
            .collect();
        let payloads: HashMap<String, String> = if needing.is_empty() {
            HashMap::new()
        } else {
            submissions::table
                .filter(submissions::instance_id.eq_any(&needing))
                .select((submissions::instance_id, submissions::payload))
                .load::<(String, String)>(conn)?
                .into_iter()
                .collect()
        };
        written += rows.len() as u64;
        let lookups = Lookups {
            cases,
            usernames,
            cells,
            payloads,
        };
        let last_page = (rows.len() as i64) < PAGE;
        if !each(rows, lookups)? || last_page {
            break;
        }
    }
    Ok(written)
}

/// What a page's rows name, looked up once per page.
struct Lookups {
    /// Case id → (number, site id).
    cases: HashMap<String, (Option<String>, String)>,
    usernames: HashMap<String, String>,
    /// Instance id → its stored export cells.
    cells: HashMap<String, String>,
    /// Instance id → envelope, for rows whose stored cells will not do.
    payloads: HashMap<String, String>,
}

impl FormExport {
    /// The local day the form's event happened (for ages), else the day
    /// it was completed.
    fn event_day(&self, data: &Value, completed: NaiveDateTime) -> Option<NaiveDate> {
        data.pointer(&self.occurred_at_pointer)
            .and_then(Value::as_str)
            .and_then(|t| super::event_day(t, self.time_zone))
            .or_else(|| Some(completed.date()))
    }
}

/// Writes the export a page at a time into `sink`; stops early when the
/// sink says the reader has gone. Returns the number of rows written.
pub fn write(
    conn: &mut DbConnection,
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
    // Two cores' worth: this thread reads the next page from the database
    // while a second one writes the last one as CSV.
    std::thread::scope(|scope| {
        let (pages, received) = std::sync::mpsc::sync_channel::<(Vec<Row>, Lookups)>(2);
        let writer = scope.spawn(move || -> AppResult<()> {
            let mut cells = Cells::default();
            for (rows, lookups) in received {
                if !sink(page_csv(export, &rows, &lookups, &mut cells)?) {
                    break;
                }
            }
            Ok(())
        });
        let read = for_each_page(conn, export, false, |rows, lookups| {
            // A closed channel: the writer stopped (the reader has gone).
            Ok(pages.send((rows, lookups)).is_ok())
        });
        drop(pages);
        let written = writer
            .join()
            .map_err(|_| AppError::internal("export: the CSV writer panicked"))?;
        written?;
        read
    })
}

/// One page of the form's CSV.
fn page_csv(
    export: &FormExport,
    rows: &[Row],
    lookups: &Lookups,
    cells: &mut Cells,
) -> AppResult<Vec<u8>> {
    let mut out = Chunk::new();
    for (instance_id, version, case_id, by, device, started, completed, received) in rows {
        let from_stored = lookups
            .cells
            .get(instance_id)
            .zip(export.mappings.get(version))
            .is_some_and(|(text, mapping)| mapping.fill(text, &mut cells.cells));
        if !from_stored {
            let payload = lookups.payloads.get(instance_id).ok_or_else(|| {
                AppError::internal(format!("export: no envelope for {instance_id}"))
            })?;
            export
                .flattener
                .fill(payload, completed.date(), cells)
                .map_err(AppError::internal)?;
        }
        let (number, site) = case_id
            .as_ref()
            .and_then(|id| lookups.cases.get(id))
            .map(|(n, s)| {
                (
                    n.as_deref().unwrap_or_default(),
                    export.site_codes.get(s).map_or("", String::as_str),
                )
            })
            .unwrap_or_default();
        let started = started.map(utc).unwrap_or_default();
        let meta: [&str; 9] = [
            instance_id,
            number,
            site,
            version,
            lookups.usernames.get(by).map_or("", String::as_str),
            device,
            &started,
            &utc(*completed),
            &utc(*received),
        ];
        out.record(
            meta.iter()
                .map(|m| m.as_bytes())
                .chain(cells.cells.iter().map(String::as_bytes)),
        )?;
    }
    out.bytes()
}

/// Writes the file of one repeat group (`export.repeats[table]`): one row
/// per item, then PARENT_KEY and KEY to join it to its parent's file.
pub fn write_repeat(
    conn: &mut DbConnection,
    export: &FormExport,
    table: usize,
    mut sink: impl FnMut(Vec<u8>) -> bool,
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
    let mut items = 0;
    for_each_page(conn, export, true, |rows, lookups| {
        let mut out = Chunk::new();
        for (instance_id, _, _, _, _, _, completed, _) in &rows {
            let payload = lookups.payloads.get(instance_id).ok_or_else(|| {
                AppError::internal(format!("export: no envelope for {instance_id}"))
            })?;
            let envelope: Value = serde_json::from_str(payload).map_err(AppError::internal)?;
            let data = &envelope["data"];
            let event_day = export.event_day(data, *completed);
            for (parent, key, item) in columns::repeat_items(data, &table.path, instance_id) {
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
        Ok(sink(out.bytes()?))
    })?;
    Ok(items)
}
