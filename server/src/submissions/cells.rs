//! A submission's answers stored at ingest as ready CSV
//! (`submission_cells`, `submission_cells_deidentified`), so a form export of its version copies one
//! string per row instead of reading every envelope. Two records per
//! submission, each with its version's own columns (`forms::columns`):
//! the identifying one and the de-identified one. An export whose columns
//! differ (a union of versions) decodes the identifying record and maps it
//! to its columns ([`Mapping`]). A tag of the layout guards against records
//! written by another release's column rules: when it does not match, the
//! export reads the envelope as before. Records are stored as the answers
//! are; formulas are neutralised as a file is written (`sheet::push_record`).

use std::io::Write as _;

use chrono::{NaiveDate, NaiveDateTime};
use diesel::prelude::*;
use serde_json::Value;

use crate::db::schema::{submission_cells, submission_cells_deidentified};
use crate::db::DbConnection;
use crate::error::AppResult;
use crate::forms::columns::{self, Column, Layout, Privacy};
use crate::sheet::{push_cell, push_record, Formulas};
use crate::time::age_in_years;

/// What ingest stores beside a submission (a row of `submission_cells`
/// and one of `submission_cells_deidentified`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoredCells {
    pub layout: String,
    pub event_day: String,
    /// One CSV record, without its line end.
    pub identifying: String,
    pub deidentified: String,
}

/// The records stored for `data` in `layout`, whose event happened on
/// `event_day`.
pub fn stored_cells(layout: &Layout, data: &Value, event_day: NaiveDate) -> StoredCells {
    let record = |columns: &[Column]| {
        let mut out = Vec::new();
        for (i, column) in columns.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_cell(
                &mut out,
                columns::cell(column, data, Some(event_day)).as_bytes(),
                Formulas::Raw,
            );
        }
        String::from_utf8(out).expect("cells are UTF-8")
    };
    StoredCells {
        layout: layout.tag.clone(),
        event_day: event_day.to_string(),
        identifying: record(&layout.identifying),
        deidentified: record(&layout.deidentified),
    }
}

/// A stored record as an export reads it: the layout's tag, the event's
/// local day, the record.
pub type StoredRecord = (String, String, String);

/// The `privacy` records of `form_id`'s submissions received from `first`
/// to `last` (inclusive), by instance id: one range of the table that
/// privacy is kept in, which is ordered like the export's pages. Each
/// privacy has a table of its own so an export reads (and decrypts) only
/// the records it writes.
pub fn in_range(
    conn: &mut DbConnection,
    form_id: &str,
    privacy: Privacy,
    first: NaiveDateTime,
    last: NaiveDateTime,
) -> AppResult<Vec<(String, StoredRecord)>> {
    Ok(match privacy {
        Privacy::Identifying => submission_cells::table
            .filter(submission_cells::form_id.eq(form_id))
            .filter(submission_cells::received_at.between(first, last))
            .select((
                submission_cells::instance_id,
                (
                    submission_cells::layout,
                    submission_cells::event_day,
                    submission_cells::identifying,
                ),
            ))
            .load(conn)?,
        Privacy::Deidentified => submission_cells_deidentified::table
            .filter(submission_cells_deidentified::form_id.eq(form_id))
            .filter(submission_cells_deidentified::received_at.between(first, last))
            .select((
                submission_cells_deidentified::instance_id,
                (
                    submission_cells_deidentified::layout,
                    submission_cells_deidentified::event_day,
                    submission_cells_deidentified::deidentified,
                ),
            ))
            .load(conn)?,
    })
}

/// Where an export column comes from in a version's identifying record.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// The version has no such field.
    Missing,
    Copy(usize),
    /// A date of birth, as the age at the event.
    Age(usize),
    /// A date, as its month.
    Month(usize),
}

/// How one version's stored record becomes an export's columns.
#[derive(Debug, Clone)]
pub struct Mapping {
    tag: String,
    /// The export's columns are the record's: copy it whole.
    verbatim: bool,
    /// Else: each column from the identifying record.
    sources: Vec<Source>,
    width: usize,
}

/// The path and option a column reads, whatever it makes of it.
fn source_key(column: &Column) -> (&str, Option<&str>) {
    match column {
        Column::Answer { path, .. }
        | Column::AgeAt { path }
        | Column::Month { path }
        | Column::Count { path } => (path, None),
        Column::Option { path, option } => (path, Some(option)),
    }
}

impl Mapping {
    /// How to make `output` from the version's record of `read` privacy.
    /// Only the identifying record can be mapped: a de-identified one is
    /// used when it is the output already (else the envelope is read).
    pub fn new(output: &[Column], layout: &Layout, read: Privacy) -> Mapping {
        let verbatim = output == layout.columns(read);
        let index: std::collections::HashMap<(&str, Option<&str>), usize> = layout
            .identifying
            .iter()
            .enumerate()
            .map(|(i, c)| (source_key(c), i))
            .collect();
        let sources = if verbatim || read != Privacy::Identifying {
            Vec::new()
        } else {
            output
                .iter()
                .map(|c| match (index.get(&source_key(c)), c) {
                    (None, _) => Source::Missing,
                    (Some(&i), Column::AgeAt { .. }) => Source::Age(i),
                    (Some(&i), Column::Month { .. }) => Source::Month(i),
                    (Some(&i), _) => Source::Copy(i),
                })
                .collect()
        };
        let tag = if verbatim || read == Privacy::Identifying {
            layout.tag.clone()
        } else {
            String::new()
        };
        Mapping {
            tag,
            verbatim,
            sources,
            width: output.len(),
        }
    }

    /// Whether a record stored with `layout` can be used (else read the
    /// envelope).
    pub fn accepts(&self, layout: &str) -> bool {
        !self.tag.is_empty() && layout == self.tag
    }

    /// Appends the export's cells made from `record` (each after a comma)
    /// to `out`, formulas neutralised as `formulas` asks. Call only when
    /// `accepts` said yes.
    pub fn write(
        &self,
        record: &str,
        event_day: &str,
        formulas: Formulas,
        out: &mut Vec<u8>,
        decoded: &mut Record,
    ) {
        if self.verbatim {
            if self.width > 0 {
                out.push(b',');
            }
            push_record(out, record.as_bytes(), formulas);
            return;
        }
        decoded.decode(record.as_bytes());
        let day = event_day.parse::<NaiveDate>().ok();
        for source in &self.sources {
            out.push(b',');
            match *source {
                Source::Missing => {}
                Source::Copy(i) => push_cell(out, decoded.field(i), formulas),
                Source::Month(i) => {
                    let text = decoded.field(i);
                    if text.len() >= 7 && text[4] == b'-' {
                        push_cell(out, &text[..7], formulas);
                    }
                }
                Source::Age(i) => {
                    let age = std::str::from_utf8(decoded.field(i))
                        .ok()
                        .and_then(|t| t.parse::<NaiveDate>().ok())
                        .zip(day)
                        .and_then(|(born, on)| age_in_years(born, on));
                    if let Some(age) = age {
                        // Writing to a Vec cannot fail.
                        let _ = write!(out, "{age}");
                    }
                }
            }
        }
    }
}

/// A stored record decoded into its fields, reused from row to row.
#[derive(Debug)]
pub struct Record {
    reader: csv_core::Reader,
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Default for Record {
    fn default() -> Record {
        Record {
            // `new`, not `default`: only the builder builds the parser's
            // state machine.
            reader: csv_core::Reader::new(),
            bytes: Vec::new(),
            ends: Vec::new(),
        }
    }
}

impl Record {
    fn decode(&mut self, text: &[u8]) {
        self.reader.reset();
        // Unquoting only shortens; one field per byte at most.
        self.bytes.resize(text.len() + 1, 0);
        self.ends.resize(text.len() + 2, 0);
        let (_, _, written, mut fields) =
            self.reader
                .read_record(text, &mut self.bytes, &mut self.ends);
        // An empty input is the end of the data: it ends the last field.
        let (_, _, _, last) =
            self.reader
                .read_record(b"", &mut self.bytes[written..], &mut self.ends[fields..]);
        fields += last;
        self.ends.truncate(fields);
    }

    /// Field `i`, empty when the record has fewer.
    fn field(&self, i: usize) -> &[u8] {
        match self.ends.get(i) {
            Some(&end) => &self.bytes[if i == 0 { 0 } else { self.ends[i - 1] }..end],
            None => b"",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_decode_to_their_fields() {
        let fields = ["", "a", "b, c", "\"q\"", "x\ny", ""];
        let mut text = Vec::new();
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                text.push(b',');
            }
            push_cell(&mut text, f.as_bytes(), Formulas::Raw);
        }
        let mut record = Record::default();
        record.decode(&text);
        for (i, f) in fields.iter().enumerate() {
            assert_eq!(record.field(i), f.as_bytes(), "{i}");
        }
        assert_eq!(record.field(fields.len()), b"");
        record.decode(b"");
        assert_eq!(record.field(0), b"");
    }
}
