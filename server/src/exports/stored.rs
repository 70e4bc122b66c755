//! A submission's answers stored at ingest as ready CSV
//! (`submission_cells`), so a form export of its version copies one
//! string per row instead of reading every envelope. Two records per
//! submission, each with its version's own columns: the identifying one
//! and the de-identified one. An export whose columns differ (a union of
//! versions) decodes the identifying record and maps it to its columns.
//! A tag of the layout guards against records written by another
//! release's column rules: when it does not match, the export reads the
//! envelope as before. Records are stored as the answers are; formulas
//! are neutralised as a file is written (`sheet::push_record`).

use std::io::Write as _;

use chrono::NaiveDate;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::columns::{self, Column, Privacy};
use super::sheet::{push_cell, push_record, Formulas};
use crate::forms::model::Field;
use crate::forms::CompiledForm;
use crate::time::age_in_years;

/// The layout of `form`'s version, worked out once per process.
pub fn layout(form: &CompiledForm) -> &Layout {
    form.export_layout.get_or_init(|| Layout::of(&form.fields))
}

/// The columns of one form version, both privacies, and their tag.
#[derive(Debug, Clone)]
pub struct Layout {
    pub identifying: Vec<Column>,
    pub deidentified: Vec<Column>,
    pub tag: String,
}

/// What ingest stores beside a submission (a row of `submission_cells`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoredCells {
    pub layout: String,
    pub event_day: String,
    /// One CSV record, without its line end.
    pub identifying: String,
    pub deidentified: String,
}

impl Layout {
    pub fn of(fields: &[Field]) -> Layout {
        let version = |privacy| columns::columns(&[fields.to_vec()], privacy);
        let (identifying, deidentified) = (
            version(Privacy::Identifying),
            version(Privacy::Deidentified),
        );
        let mut hash = Sha256::new();
        for column in identifying.iter().chain(&deidentified) {
            hash.update(column.header().as_bytes());
            hash.update(b"\n");
        }
        // v3: free text left out and every date as its month when
        // de-identified (#14).
        let tag = format!("v3:{}", &hex::encode(hash.finalize())[..16]);
        Layout {
            identifying,
            deidentified,
            tag,
        }
    }

    pub fn columns(&self, privacy: Privacy) -> &[Column] {
        match privacy {
            Privacy::Identifying => &self.identifying,
            Privacy::Deidentified => &self.deidentified,
        }
    }

    /// The records stored for `data`, whose event happened on `event_day`.
    pub fn cells(&self, data: &Value, event_day: NaiveDate) -> StoredCells {
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
            layout: self.tag.clone(),
            event_day: event_day.to_string(),
            identifying: record(&self.identifying),
            deidentified: record(&self.deidentified),
        }
    }
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
    use serde_json::json;

    use super::*;
    use crate::exports::flatten::{Cells, Flattener};
    use crate::forms::{check, definitions, model};

    /// The cells read from the envelope, as the export writes them.
    fn written(cells: &[String], formulas: Formulas) -> String {
        let mut out = Vec::new();
        for cell in cells {
            out.push(b',');
            push_cell(&mut out, cell.as_bytes(), formulas);
        }
        String::from_utf8(out).unwrap()
    }

    /// Records stored at ingest and copied or mapped at export give what
    /// the envelope gives, for every shipped form and both privacies, and
    /// for columns in another order (as a union of versions has them).
    #[test]
    fn stored_records_give_what_the_envelope_gives() {
        let set = definitions::shipped();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/forms");
        let mut compared = 0;
        let mut decoded = Record::default();
        for file in &set.forms {
            let form = check::check(&file.document, &set.resources).unwrap();
            let Ok(text) = std::fs::read_to_string(root.join(&form.meta.id).join("valid.json"))
            else {
                continue;
            };
            let mut data: Value = serde_json::from_str(&text).unwrap();
            // Text that must be quoted, in every free-text answer.
            let layout = Layout::of(&form.fields);
            for column in &layout.identifying {
                if let Column::Answer { path, .. } = column {
                    let pointer = format!("/{path}");
                    if let Some(v @ Value::String(_)) = data.pointer_mut(&pointer) {
                        if v.as_str().is_some_and(|t| t.parse::<NaiveDate>().is_err()) {
                            // And a formula, to be neutralised.
                            *v = json!(format!("={}, \"quoted\"\nand on", v.as_str().unwrap()));
                        }
                    }
                }
            }
            let meta = model::meta(&file.document).unwrap();
            let envelope = json!({"data": data}).to_string();
            let completed = NaiveDate::from_ymd_opt(2026, 3, 2).unwrap();
            let tz = chrono_tz::Asia::Almaty;
            let mut from_envelope = Cells::default();
            // The day the envelope path works out, as ingest would store it.
            let day = data
                .pointer(&meta.occurred_at)
                .and_then(Value::as_str)
                .and_then(|t| crate::exports::event_day(t, tz))
                .unwrap_or(completed);
            let stored = layout.cells(&data, day);
            let mut reversed = layout.identifying.clone();
            reversed.reverse();
            let outputs = [
                (Privacy::Identifying, layout.identifying.clone()),
                (Privacy::Deidentified, layout.deidentified.clone()),
                (Privacy::Identifying, reversed),
            ];
            for (privacy, output) in outputs {
                Flattener::new(&output, &meta.occurred_at, tz)
                    .fill(&envelope, completed, &mut from_envelope)
                    .unwrap();
                // Copied whole where the columns are the record's; mapped
                // from the identifying record otherwise.
                for (read, formulas) in [
                    (privacy, Formulas::Escaped),
                    (Privacy::Identifying, Formulas::Escaped),
                    (privacy, Formulas::Raw),
                    (Privacy::Identifying, Formulas::Raw),
                ] {
                    let expected = written(&from_envelope.cells, formulas);
                    let mapping = Mapping::new(&output, &layout, read);
                    assert!(mapping.accepts(&stored.layout));
                    let record = match read {
                        Privacy::Identifying => &stored.identifying,
                        Privacy::Deidentified => &stored.deidentified,
                    };
                    let mut out = Vec::new();
                    mapping.write(record, &stored.event_day, formulas, &mut out, &mut decoded);
                    assert_eq!(
                        String::from_utf8(out).unwrap(),
                        expected,
                        "{} {privacy:?} read {read:?}",
                        form.meta.id
                    );
                    compared += output.len();
                }
            }
            // Another release's column rules: not used.
            let other = Layout {
                tag: "v0:other".into(),
                ..layout.clone()
            };
            assert!(
                !Mapping::new(&layout.identifying, &other, Privacy::Identifying)
                    .accepts(&stored.layout)
            );
        }
        assert!(compared > 1000, "{compared}");
    }

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
