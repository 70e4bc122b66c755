//! The cells of a form export read straight from a stored envelope's JSON
//! text: the columns' paths make a tree, and one pass over the text fills
//! the cells the tree names and skips the rest without building it. What
//! `columns::cell` computes from a parsed `Value`, without the `Value` — a
//! million rows are not a million trees of maps and strings.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use crate::json::BorrowedStr;
use chrono::NaiveDate;
use foldhash::HashMap;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::forms::columns::Column;
use crate::time::age_in_years;

#[derive(Debug, Clone)]
enum Slot {
    Answer,
    AgeAt,
    Month,
    Option(String),
    Count,
}

#[derive(Debug, Clone, Default)]
struct Node {
    children: HashMap<String, usize>,
    /// (column, what to put in it) for the value at this node.
    slots: Vec<(usize, Slot)>,
    /// The form's `occurred_at` answer (for ages).
    event: bool,
}

/// The tree of an export's columns, rooted at the envelope.
#[derive(Debug, Clone)]
pub struct Flattener {
    nodes: Vec<Node>,
    width: usize,
    ages: Vec<usize>,
    time_zone: chrono_tz::Tz,
}

/// The cells of one row, reused from row to row.
#[derive(Debug, Default)]
pub struct Cells {
    pub cells: Vec<String>,
    event: String,
}

impl Flattener {
    /// `columns` under the envelope's `data`; `occurred_at` is the JSON
    /// pointer of the form's event time in `data`.
    pub fn new(columns: &[Column], occurred_at: &str, time_zone: chrono_tz::Tz) -> Flattener {
        let mut f = Flattener {
            nodes: vec![Node::default()],
            width: columns.len(),
            ages: Vec::new(),
            time_zone,
        };
        for (i, column) in columns.iter().enumerate() {
            let (path, slot) = match column {
                Column::Answer { path, .. } => (path, Slot::Answer),
                Column::AgeAt { path } => {
                    f.ages.push(i);
                    (path, Slot::AgeAt)
                }
                Column::Month { path } => (path, Slot::Month),
                Column::Option { path, option } => (path, Slot::Option(option.clone())),
                Column::Count { path } => (path, Slot::Count),
            };
            let node = f.node(path.split('/').map(|s| s.trim_end_matches("[]")));
            f.nodes[node].slots.push((i, slot));
        }
        if !occurred_at.is_empty() {
            let tokens = occurred_at.trim_start_matches('/').split('/');
            let node = f.node(tokens);
            f.nodes[node].event = true;
        }
        f
    }

    /// The node at `data/<segments>`, made if missing.
    fn node<'a>(&mut self, segments: impl Iterator<Item = &'a str>) -> usize {
        let mut at = 0;
        for segment in std::iter::once("data").chain(segments) {
            at = match self.nodes[at].children.get(segment) {
                Some(&next) => next,
                None => {
                    self.nodes.push(Node::default());
                    let next = self.nodes.len() - 1;
                    self.nodes[at].children.insert(segment.to_string(), next);
                    next
                }
            };
        }
        at
    }

    /// Fills `out` from the envelope `payload`; `completed` is the day the
    /// form was completed (ages when it records no event time).
    pub fn fill(
        &self,
        payload: &str,
        completed: NaiveDate,
        out: &mut Cells,
    ) -> serde_json::Result<()> {
        out.cells.resize_with(self.width, String::new);
        out.cells.iter_mut().for_each(String::clear);
        out.event.clear();
        let mut de = serde_json::Deserializer::from_str(payload);
        At {
            tree: self,
            node: 0,
            out,
        }
        .deserialize(&mut de)?;
        de.end()?;
        // Absent repeat groups count 0, as `columns::cell` does.
        for node in &self.nodes {
            for (i, slot) in &node.slots {
                if matches!(slot, Slot::Count) && out.cells[*i].is_empty() {
                    out.cells[*i].push('0');
                }
            }
        }
        if !self.ages.is_empty() {
            let day = super::event_day(&out.event, self.time_zone).unwrap_or(completed);
            for &i in &self.ages {
                let age = out.cells[i]
                    .parse::<NaiveDate>()
                    .ok()
                    .and_then(|born| age_in_years(born, day));
                out.cells[i].clear();
                if let Some(age) = age {
                    let _ = write!(out.cells[i], "{age}");
                }
            }
        }
        Ok(())
    }
}

/// Visits the value at `node`.
struct At<'a> {
    tree: &'a Flattener,
    node: usize,
    out: &'a mut Cells,
}

impl At<'_> {
    fn text(&mut self, text: &str) {
        let node = &self.tree.nodes[self.node];
        if node.event {
            self.out.event.push_str(text);
        }
        for (i, slot) in &node.slots {
            let cell = &mut self.out.cells[*i];
            match slot {
                Slot::Answer | Slot::AgeAt => cell.push_str(text),
                Slot::Month if text.len() >= 7 && text.as_bytes()[4] == b'-' => {
                    cell.push_str(&text[..7]);
                }
                Slot::Month | Slot::Option(_) | Slot::Count => {}
            }
        }
    }

    fn scalar(&mut self, value: impl fmt::Display) {
        for (i, slot) in &self.tree.nodes[self.node].slots {
            if matches!(slot, Slot::Answer) {
                let _ = write!(self.out.cells[*i], "{value}");
            }
        }
    }
}

impl<'de> DeserializeSeed<'de> for At<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for At<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_str<E>(mut self, v: &str) -> Result<(), E> {
        self.text(v);
        Ok(())
    }

    fn visit_bool<E>(mut self, v: bool) -> Result<(), E> {
        self.scalar(v);
        Ok(())
    }

    fn visit_i64<E>(mut self, v: i64) -> Result<(), E> {
        self.scalar(v);
        Ok(())
    }

    fn visit_u64<E>(mut self, v: u64) -> Result<(), E> {
        self.scalar(v);
        Ok(())
    }

    fn visit_f64<E>(mut self, v: f64) -> Result<(), E> {
        // As serde_json writes it (`1.0`, not `1`).
        self.scalar(serde_json::Number::from_f64(v).map_or_else(String::new, |n| n.to_string()));
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<(), M::Error> {
        let node = &self.tree.nodes[self.node];
        while let Some(BorrowedStr(key)) = map.next_key::<BorrowedStr<'de>>()? {
            match node.children.get(key.as_ref()) {
                Some(&child) => map.next_value_seed(At {
                    tree: self.tree,
                    node: child,
                    out: &mut *self.out,
                })?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }

    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<(), S::Error> {
        let node = &self.tree.nodes[self.node];
        let mut count = 0usize;
        let mut options: Vec<bool> = vec![false; node.slots.len()];
        let mut first = true;
        while let Some(item) = seq.next_element::<Item<'de>>()? {
            count += 1;
            let Item::Text(text) = item else { continue };
            for (n, (i, slot)) in node.slots.iter().enumerate() {
                match slot {
                    Slot::Answer => {
                        let cell = &mut self.out.cells[*i];
                        if !first {
                            cell.push(' ');
                        }
                        cell.push_str(&text);
                    }
                    Slot::Option(option) if *option == text => options[n] = true,
                    _ => {}
                }
            }
            first = false;
        }
        for (n, (i, slot)) in node.slots.iter().enumerate() {
            let cell = &mut self.out.cells[*i];
            match slot {
                Slot::Option(_) => cell.push(if options[n] { '1' } else { '0' }),
                Slot::Count => {
                    let _ = write!(cell, "{count}");
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// An item of a list: its text if it is a string or a number, else
/// skipped (a repeat group's items are only counted).
enum Item<'de> {
    Text(Cow<'de, str>),
    Other,
}

impl<'de> de::Deserialize<'de> for Item<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ItemVisitor;
        impl<'de> Visitor<'de> for ItemVisitor {
            type Value = Item<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Item<'de>, E> {
                Ok(Item::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Item<'de>, E> {
                Ok(Item::Text(Cow::Owned(v.to_string())))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Item<'de>, E> {
                Ok(Item::Text(Cow::Owned(v.to_string())))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Item<'de>, E> {
                Ok(Item::Text(Cow::Owned(v.to_string())))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Item<'de>, E> {
                Ok(Item::Text(Cow::Owned(v.to_string())))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Item<'de>, E> {
                Ok(Item::Other)
            }
            fn visit_unit<E>(self) -> Result<Item<'de>, E> {
                Ok(Item::Other)
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Item<'de>, M::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Item::Other)
            }
            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Item<'de>, S::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Item::Other)
            }
        }
        d.deserialize_any(ItemVisitor)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::forms::columns::{self, Layout, Privacy};
    use crate::forms::{check, definitions, model};
    use crate::sheet::{push_cell, Formulas};
    use crate::submissions::cells::{stored_cells, Mapping, Record};

    /// Every shipped form's fixture gives the same cells read from text as
    /// `columns::cell` gives from the parsed value, both privacies.
    #[test]
    fn text_and_parsed_values_give_the_same_cells_for_every_shipped_form() {
        let set = definitions::shipped();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/forms");
        let mut checked = 0;
        for file in &set.forms {
            let form = check::check(&file.document, &set.resources).unwrap();
            let id = form.meta.id.clone();
            let Ok(text) = std::fs::read_to_string(root.join(&id).join("valid.json")) else {
                continue;
            };
            let data: Value = serde_json::from_str(&text).unwrap();
            let envelope = json!({"instance_id": "x", "form_id": id, "data": data}).to_string();
            let completed = NaiveDate::from_ymd_opt(2026, 3, 2).unwrap();
            for privacy in [Privacy::Identifying, Privacy::Deidentified] {
                let cols = columns::columns(std::slice::from_ref(&form.fields), privacy);
                let meta = model::meta(&file.document).unwrap();
                let tree = Flattener::new(&cols, &meta.occurred_at, chrono_tz::Asia::Almaty);
                let mut cells = Cells::default();
                tree.fill(&envelope, completed, &mut cells).unwrap();
                let day = data
                    .pointer(&meta.occurred_at)
                    .and_then(Value::as_str)
                    .and_then(|t| crate::exports::event_day(t, chrono_tz::Asia::Almaty))
                    .or(Some(completed));
                for (i, column) in cols.iter().enumerate() {
                    assert_eq!(
                        cells.cells[i],
                        columns::cell(column, &data, day),
                        "{id} {}",
                        column.header()
                    );
                }
                checked += cols.len();
            }
        }
        assert!(checked > 1000, "{checked} cells compared");
    }

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
            let stored = stored_cells(&layout, &data, day);
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
}
