//! A submission's answers stored at ingest as its version's export cells
//! (`submissions.cells`), so a form export copies strings instead of
//! reading every envelope. The cells are always the identifying ones of
//! the submission's own version; the export maps them to its columns (the
//! union of versions, de-identified or not). A tag of the layout guards
//! against cells written by another release's column rules: when it does
//! not match, the export reads the payload as before.

use std::fmt::Write as _;

use chrono::NaiveDate;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::columns::{self, age_in_years, Column, Privacy};
use crate::forms::model::Field;
use crate::forms::CompiledForm;
use crate::json::BorrowedStr;

/// The layout of `form`'s version, worked out once per process.
pub fn layout(form: &CompiledForm) -> &Layout {
    form.export_layout.get_or_init(|| Layout::of(&form.fields))
}

/// The identifying columns of one form version, and their tag.
#[derive(Debug, Clone)]
pub struct Layout {
    pub columns: Vec<Column>,
    pub tag: String,
}

impl Layout {
    pub fn of(fields: &[Field]) -> Layout {
        let columns = columns::columns(&[fields.to_vec()], Privacy::Identifying);
        let mut hash = Sha256::new();
        for column in &columns {
            hash.update(column.header().as_bytes());
            hash.update(b"\n");
        }
        let tag = format!("v1:{}", &hex::encode(hash.finalize())[..16]);
        Layout { columns, tag }
    }

    /// What `submissions.cells` holds for `data`: `[tag, event day, cells…]`.
    pub fn cells(&self, data: &Value, event_day: NaiveDate) -> String {
        let mut row: Vec<String> = Vec::with_capacity(self.columns.len() + 2);
        row.push(self.tag.clone());
        row.push(event_day.to_string());
        row.extend(
            self.columns
                .iter()
                .map(|c| columns::cell(c, data, Some(event_day))),
        );
        serde_json::to_string(&row).expect("strings serialise")
    }
}

/// Where an export column comes from in a version's stored cells.
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

/// How to turn one version's stored cells into an export's columns.
#[derive(Debug, Clone)]
pub struct Mapping {
    tag: String,
    sources: Vec<Source>,
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
    pub fn new(output: &[Column], layout: &Layout) -> Mapping {
        let index: std::collections::HashMap<(&str, Option<&str>), usize> = layout
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| (source_key(c), i))
            .collect();
        let sources = output
            .iter()
            .map(|c| match (index.get(&source_key(c)), c) {
                (None, _) => Source::Missing,
                (Some(&i), Column::AgeAt { .. }) => Source::Age(i),
                (Some(&i), Column::Month { .. }) => Source::Month(i),
                (Some(&i), _) => Source::Copy(i),
            })
            .collect();
        Mapping {
            tag: layout.tag.clone(),
            sources,
        }
    }

    /// Whether `text` was stored with this layout (else read the payload).
    pub fn accepts(&self, text: &str) -> bool {
        text.strip_prefix("[\"")
            .and_then(|rest| rest.strip_prefix(self.tag.as_str()))
            .is_some_and(|rest| rest.starts_with('"'))
    }

    /// Fills `out` from stored `text`; `false` if it was written with
    /// another layout (or is damaged): then read the payload instead.
    pub fn fill(&self, text: &str, out: &mut Vec<String>) -> bool {
        let Ok(stored) = serde_json::from_str::<Vec<BorrowedStr>>(text) else {
            return false;
        };
        if stored.len() < 2 || stored[0].0 != self.tag {
            return false;
        }
        let day = stored[1].0.parse::<NaiveDate>().ok();
        let cells = &stored[2..];
        out.resize_with(self.sources.len(), String::new);
        for (cell, source) in out.iter_mut().zip(&self.sources) {
            cell.clear();
            match *source {
                Source::Missing => {}
                Source::Copy(i) => cell.push_str(cells.get(i).map_or("", |c| &c.0)),
                Source::Month(i) => {
                    let text = cells.get(i).map_or("", |c| &c.0);
                    if text.len() >= 7 && text.as_bytes()[4] == b'-' {
                        cell.push_str(&text[..7]);
                    }
                }
                Source::Age(i) => {
                    let age = cells
                        .get(i)
                        .and_then(|c| c.0.parse::<NaiveDate>().ok())
                        .zip(day)
                        .and_then(|(born, on)| age_in_years(born, on));
                    if let Some(age) = age {
                        let _ = write!(cell, "{age}");
                    }
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::exports::flatten::{Cells, Flattener};
    use crate::forms::{check, definitions, model};

    /// Cells stored at ingest and mapped at export equal the cells read
    /// from the payload, for every shipped form and both privacies.
    #[test]
    fn stored_cells_give_what_the_payload_gives() {
        let set = definitions::shipped();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/forms");
        let mut compared = 0;
        for file in &set.forms {
            let form = check::check(&file.document, &set.resources).unwrap();
            let Ok(text) = std::fs::read_to_string(root.join(&form.meta.id).join("valid.json"))
            else {
                continue;
            };
            let data: Value = serde_json::from_str(&text).unwrap();
            let meta = model::meta(&file.document).unwrap();
            let envelope = json!({"data": data}).to_string();
            let completed = NaiveDate::from_ymd_opt(2026, 3, 2).unwrap();
            let tz = chrono_tz::Asia::Almaty;
            let mut from_payload = Cells::default();
            // The day the payload path works out, as ingest would store it.
            let day = data
                .pointer(&meta.occurred_at)
                .and_then(Value::as_str)
                .and_then(|t| crate::exports::event_day(t, tz))
                .unwrap_or(completed);
            let layout = Layout::of(&form.fields);
            let stored = layout.cells(&data, day);
            for privacy in [Privacy::Identifying, Privacy::Deidentified] {
                let output = columns::columns(std::slice::from_ref(&form.fields), privacy);
                Flattener::new(&output, &meta.occurred_at, tz)
                    .fill(&envelope, completed, &mut from_payload)
                    .unwrap();
                let mut mapped = Vec::new();
                assert!(Mapping::new(&output, &layout).fill(&stored, &mut mapped));
                assert_eq!(mapped, from_payload.cells, "{} {privacy:?}", form.meta.id);
                compared += mapped.len();
            }
            let other = Layout {
                tag: "v0:other".into(),
                ..layout.clone()
            };
            assert!(!Mapping::new(&layout.columns, &other).fill(&stored, &mut Vec::new()));
        }
        assert!(compared > 1000, "{compared}");
    }
}
