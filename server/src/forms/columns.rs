//! The columns of a form's CSV export: the union of every published
//! version's fields in form order (the newest version's order, then fields
//! only older versions had), with select-multiple questions as one
//! space-separated column plus a 0/1 column per option, and repeat groups
//! as their item count.
//!
//! De-identified by default, field by field by its [`Class`]: direct
//! identifiers (`x-pii: direct`) and free text are left out; a date of
//! birth becomes the age in years when the form's event happened, every
//! other date or time (quasi-identifying or not) keeps its month; choices,
//! yes/no answers and numbers stay — the manuals disaggregate by them. The
//! table of every shipped field's class is generated into
//! docs/field-classes.md (`field_classes_markdown`, kept current by a test).

use chrono::NaiveDate;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::forms::model::{Field, FieldKind, Pii};
use crate::forms::CompiledForm;
use crate::time::age_in_years;

/// Identifying exports keep every answer; de-identified ones apply the
/// rules above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privacy {
    Deidentified,
    Identifying,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    /// An answer as given.
    Answer { path: String, kind: FieldKind },
    /// A date of birth as the age in whole years at the form's event.
    AgeAt { path: String },
    /// A date as its year and month.
    Month { path: String },
    /// 1 when a select-multiple answer includes `option`, else 0.
    Option { path: String, option: String },
    /// How many items a repeat group has.
    Count { path: String },
}

impl Column {
    pub fn header(&self) -> String {
        match self {
            Column::Answer { path, .. } => path.clone(),
            Column::AgeAt { path } => format!("{path}_age_years"),
            Column::Month { path } => format!("{path}_month"),
            Column::Option { path, option } => format!("{path}/{option}"),
            Column::Count { path } => format!("{}_count", path.trim_end_matches("[]")),
        }
    }
}

fn is_date_of_birth(field: &Field) -> bool {
    field.fact.as_deref() == Some("child.date_of_birth")
        || field.key == "dob"
        || field.key.ends_with("_dob")
}

/// The columns for fields of several versions, newest version first.
pub fn columns(versions: &[Vec<Field>], privacy: Privacy) -> Vec<Column> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for fields in versions {
        for field in fields {
            if !seen.insert(field.path.clone()) {
                continue;
            }
            out.extend(columns_of(field, privacy));
        }
    }
    out
}

/// What a field is, for de-identification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// `x-pii: direct`: names, addresses, phone and ID numbers, photos,
    /// signatures.
    Direct,
    /// Free text: a string that is neither a choice (`oneOf`/`anyOf` of
    /// `const`s) nor a date (`format: date` or `date-time`) — narratives,
    /// names of places, codes with only a `pattern`, references (`format:
    /// uuid`), e-mail addresses; a list of such strings; an attachment.
    FreeText,
    /// `x-pii: quasi` and not free text: identifying in combination
    /// (dates of birth, nationality, sex).
    Quasi,
    /// None of the above: choices, yes/no, numbers, dates of events.
    Safe,
}

impl Class {
    pub fn of(pii: Option<Pii>, kind: FieldKind) -> Class {
        match (pii, kind) {
            (Some(Pii::Direct), _) => Class::Direct,
            (_, FieldKind::Text | FieldKind::List | FieldKind::Attachment) => Class::FreeText,
            (Some(Pii::Quasi), _) => Class::Quasi,
            (None, _) => Class::Safe,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Class::Direct => "direct",
            Class::FreeText => "free text",
            Class::Quasi => "quasi",
            Class::Safe => "safe",
        }
    }
}

/// What a de-identified export makes of a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Treatment {
    LeftOut,
    /// A date of birth: the age in whole years at the event.
    AgeAt,
    /// A date or time: its year and month.
    Month,
    Kept,
}

/// The de-identified profile's one rule, for form fields and case facts
/// alike.
pub fn treatment(pii: Option<Pii>, kind: FieldKind, date_of_birth: bool) -> Treatment {
    match (Class::of(pii, kind), kind) {
        (Class::Direct | Class::FreeText, _) => Treatment::LeftOut,
        (_, FieldKind::Date) if date_of_birth => Treatment::AgeAt,
        (_, FieldKind::Date | FieldKind::DateTime) => Treatment::Month,
        _ => Treatment::Kept,
    }
}

fn columns_of(field: &Field, privacy: Privacy) -> Vec<Column> {
    let inside_repeat = field.path.trim_end_matches("[]").contains("[]");
    if inside_repeat {
        // Items of repeat groups go to their own files in the .zip export.
        return Vec::new();
    }
    if privacy == Privacy::Deidentified {
        let path = field.path.clone();
        match treatment(field.pii, field.kind, is_date_of_birth(field)) {
            Treatment::LeftOut => return Vec::new(),
            Treatment::AgeAt => return vec![Column::AgeAt { path }],
            Treatment::Month => return vec![Column::Month { path }],
            Treatment::Kept => {}
        }
    }
    match field.kind {
        FieldKind::Section | FieldKind::Object => Vec::new(),
        FieldKind::Repeat => vec![Column::Count {
            path: field.path.clone(),
        }],
        FieldKind::SelectMultiple => {
            let mut cols = vec![Column::Answer {
                path: field.path.clone(),
                kind: field.kind,
            }];
            cols.extend(field.options.iter().filter_map(|o| {
                o.value.as_str().map(|option| Column::Option {
                    path: field.path.clone(),
                    option: option.to_string(),
                })
            }));
            cols
        }
        kind => vec![Column::Answer {
            path: field.path.clone(),
            kind,
        }],
    }
}

/// A repeat group's own file in the `.zip` export: one row per item, its
/// fields relative to the item (a repeat inside it as its item count).
#[derive(Debug, Clone, PartialEq)]
pub struct RepeatTable {
    /// `child/siblings[]`; a nested group keeps every level's `[]`.
    pub path: String,
    pub columns: Vec<Column>,
}

impl RepeatTable {
    /// The file name within the archive: `kz.referral-child-siblings.csv`.
    pub fn file_name(&self, form_id: &str) -> String {
        format!(
            "{form_id}-{}.csv",
            self.path.replace("[]", "").replace('/', "-")
        )
    }
}

/// The repeat groups of several versions (newest first), each with the
/// union of its items' columns.
pub fn repeat_tables(versions: &[Vec<Field>], privacy: Privacy) -> Vec<RepeatTable> {
    let mut tables: Vec<RepeatTable> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    // A group that is itself a direct identifier has no file (nor do the
    // groups inside it) when de-identified.
    let left_out: Vec<String> = versions
        .iter()
        .flatten()
        .filter(|f| {
            f.kind == FieldKind::Repeat
                && privacy == Privacy::Deidentified
                && Class::of(f.pii, f.kind) == Class::Direct
        })
        .map(|f| format!("{}/", f.path))
        .collect();
    for fields in versions {
        for group in fields.iter().filter(|f| {
            f.kind == FieldKind::Repeat
                && !left_out
                    .iter()
                    .any(|p| format!("{}/", f.path).starts_with(p.as_str()))
        }) {
            let index = match tables.iter().position(|t| t.path == group.path) {
                Some(i) => i,
                None => {
                    tables.push(RepeatTable {
                        path: group.path.clone(),
                        columns: Vec::new(),
                    });
                    tables.len() - 1
                }
            };
            let prefix = format!("{}/", group.path);
            for field in fields {
                let Some(rest) = field.path.strip_prefix(&prefix) else {
                    continue;
                };
                // Fields of a repeat inside this one belong to its own file.
                if rest.trim_end_matches("[]").contains("[]") || !seen.insert(field.path.clone()) {
                    continue;
                }
                let relative = Field {
                    path: rest.to_string(),
                    ..field.clone()
                };
                tables[index].columns.extend(columns_of(&relative, privacy));
            }
        }
    }
    tables
}

/// The items of the repeat group at `path` in `data`, with their key and
/// their parent's key (ODK Central's KEY and PARENT_KEY): `instance` for a
/// top-level group, the enclosing item's key for a nested one.
pub fn repeat_items<'a>(
    data: &'a Value,
    path: &str,
    instance: &str,
) -> Vec<(String, String, &'a Value)> {
    fn walk<'a>(
        node: &'a Value,
        segments: &[&str],
        key: String,
        parent: &str,
        out: &mut Vec<(String, String, &'a Value)>,
    ) {
        let Some((segment, rest)) = segments.split_first() else {
            return;
        };
        let name = segment.trim_end_matches("[]");
        let Some(child) = node.get(name) else { return };
        if !segment.ends_with("[]") {
            walk(child, rest, format!("{key}/{name}"), parent, out);
            return;
        }
        for (i, item) in child.as_array().into_iter().flatten().enumerate() {
            let item_key = format!("{key}/{name}[{}]", i + 1);
            if rest.is_empty() {
                out.push((parent.to_string(), item_key, item));
            } else {
                walk(item, rest, item_key.clone(), &item_key, out);
            }
        }
    }
    let segments: Vec<&str> = path.split('/').collect();
    let mut out = Vec::new();
    walk(data, &segments, instance.to_string(), instance, &mut out);
    out
}

/// The value at `path` (`a/b`, no repeats) in `data`.
fn at<'a>(data: &'a Value, path: &str) -> Option<&'a Value> {
    let mut node = data;
    for segment in path.split('/') {
        node = node.get(segment.trim_end_matches("[]"))?;
    }
    (!node.is_null()).then_some(node)
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    }
}

/// The cell of `column` for a submission's `data`; `event_day` is the
/// local day its event happened (for ages).
pub fn cell(column: &Column, data: &Value, event_day: Option<NaiveDate>) -> String {
    match column {
        Column::Answer { path, .. } => at(data, path).map(text).unwrap_or_default(),
        Column::AgeAt { path } => at(data, path)
            .and_then(Value::as_str)
            .and_then(|d| d.parse::<NaiveDate>().ok())
            .zip(event_day)
            .and_then(|(born, on)| age_in_years(born, on))
            .map(|age| age.to_string())
            .unwrap_or_default(),
        Column::Month { path } => at(data, path)
            .and_then(Value::as_str)
            .filter(|d| d.len() >= 7 && d.as_bytes()[4] == b'-')
            .map(|d| d[..7].to_string())
            .unwrap_or_default(),
        Column::Option { path, option } => match at(data, path) {
            Some(Value::Array(items)) => {
                if items.iter().any(|v| v.as_str() == Some(option)) {
                    "1".into()
                } else {
                    "0".into()
                }
            }
            _ => String::new(),
        },
        Column::Count { path } => match at(data, path) {
            Some(Value::Array(items)) => items.len().to_string(),
            _ => "0".into(),
        },
    }
}

/// The table of docs/field-classes.md: every field of every shipped form
/// with its class and what a de-identified export makes of it.
pub fn field_classes_markdown() -> String {
    use std::fmt::Write as _;
    let set = crate::forms::definitions::shipped();
    let mut forms: Vec<_> = set
        .forms
        .iter()
        .filter_map(|file| crate::forms::check::check(&file.document, &set.resources).ok())
        .collect();
    forms.sort_by(|a, b| a.meta.id.cmp(&b.meta.id));
    let mut out = String::from(
        "# Field classes of the shipped forms\n\n\
         Generated from the form definitions by `forms::columns::field_classes_markdown` \
         (`CASESYNC_WRITE_DOCS=1 cargo test --lib field_classes` rewrites it; the test fails \
         when it is stale). What each class means and why: docs/api.md, \"Exports\". \
         Identifying exports keep every field.\n\n\
         | form | field | kind | class | de-identified export |\n|---|---|---|---|---|\n",
    );
    for form in &forms {
        for field in &form.fields {
            let kind = match field.kind {
                FieldKind::Section | FieldKind::Object => continue,
                FieldKind::Repeat => "repeat group",
                FieldKind::Text => "text",
                FieldKind::Date => "date",
                FieldKind::DateTime => "date-time",
                FieldKind::Integer => "integer",
                FieldKind::Number => "number",
                FieldKind::Boolean => "yes/no",
                FieldKind::SelectOne => "choice",
                FieldKind::SelectMultiple => "choices",
                FieldKind::List => "list of text",
                FieldKind::Attachment => "attachment",
            };
            let class = Class::of(field.pii, field.kind);
            let made = match (
                treatment(field.pii, field.kind, is_date_of_birth(field)),
                field.kind,
            ) {
                (Treatment::LeftOut, _) => "left out",
                (Treatment::AgeAt, _) => "age in years (`_age_years`)",
                (Treatment::Month, _) => "month (`_month`, YYYY-MM)",
                (Treatment::Kept, FieldKind::Repeat) => {
                    "item count; items in their own file (.zip)"
                }
                (Treatment::Kept, _) => "kept",
            };
            let _ = writeln!(
                out,
                "| `{}` | `{}` | {kind} | {} | {made} |",
                form.meta.id,
                field.path,
                class.name()
            );
        }
    }
    out
}

/// The layout of `form`'s version, worked out once per process (the
/// cells ingest stores beside each submission follow it: `submissions::cells`).
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

impl Layout {
    pub fn of(fields: &[Field]) -> Layout {
        let version = |privacy| columns(&[fields.to_vec()], privacy);
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forms::{check, definitions};
    use serde_json::json;

    fn fields(form_id: &str) -> Vec<Field> {
        let set = definitions::shipped();
        let file = set
            .forms
            .iter()
            .find(|f| f.document["x-form"]["id"] == form_id)
            .unwrap();
        check::check(&file.document, &set.resources).unwrap().fields
    }

    #[test]
    fn deidentified_columns_drop_names_and_turn_birth_dates_into_ages() {
        let referral = fields("kz.referral");
        let open = columns(std::slice::from_ref(&referral), Privacy::Identifying);
        let closed = columns(&[referral], Privacy::Deidentified);
        let headers: Vec<String> = closed.iter().map(Column::header).collect();
        assert!(open.iter().any(|c| c.header() == "child/child_name"));
        assert!(!headers.contains(&"child/child_name".to_string()));
        assert!(headers.contains(&"child/child_dob_age_years".to_string()));
        assert!(!headers.contains(&"child/child_dob".to_string()));
        assert!(headers.contains(&"child/child_languages/ru".to_string()));
        assert!(!headers.iter().any(|h| h.contains("[]/")), "{headers:?}");
    }

    #[test]
    fn repeat_items_carry_their_key_and_their_parents() {
        let data = json!({"plan": {"actions": [
            {"what": "school", "steps": [{"n": 1}, {"n": 2}]},
            {"what": "health"}
        ]}});
        let top: Vec<(String, String)> = repeat_items(&data, "plan/actions[]", "uuid:1")
            .into_iter()
            .map(|(p, k, _)| (p, k))
            .collect();
        assert_eq!(
            top,
            vec![
                ("uuid:1".into(), "uuid:1/plan/actions[1]".into()),
                ("uuid:1".into(), "uuid:1/plan/actions[2]".into()),
            ]
        );
        let nested = repeat_items(&data, "plan/actions[]/steps[]", "uuid:1");
        assert_eq!(nested.len(), 2);
        assert_eq!(nested[1].0, "uuid:1/plan/actions[1]");
        assert_eq!(nested[1].1, "uuid:1/plan/actions[1]/steps[2]");
        assert_eq!(nested[1].2["n"], 2);
        let table = RepeatTable {
            path: "plan/actions[]/steps[]".into(),
            columns: Vec::new(),
        };
        assert_eq!(
            table.file_name("bt.case_plan"),
            "bt.case_plan-plan-actions-steps.csv"
        );
    }

    #[test]
    fn cells_render_answers_options_counts_and_ages() {
        let data = json!({"child": {"child_dob": "2012-05-14", "child_languages": ["uz", "ru"],
                                     "siblings": [{}, {}]}});
        let day = NaiveDate::from_ymd_opt(2026, 5, 13);
        let age = Column::AgeAt {
            path: "child/child_dob".into(),
        };
        assert_eq!(cell(&age, &data, day), "13");
        assert_eq!(
            cell(&age, &data, NaiveDate::from_ymd_opt(2026, 5, 14)),
            "14"
        );
        let langs = Column::Answer {
            path: "child/child_languages".into(),
            kind: FieldKind::SelectMultiple,
        };
        assert_eq!(cell(&langs, &data, day), "uz ru");
        let ru = Column::Option {
            path: "child/child_languages".into(),
            option: "ru".into(),
        };
        let kk = Column::Option {
            path: "child/child_languages".into(),
            option: "kk".into(),
        };
        assert_eq!(
            (cell(&ru, &data, day), cell(&kk, &data, day)),
            ("1".into(), "0".into())
        );
        let count = Column::Count {
            path: "child/siblings[]".into(),
        };
        assert_eq!(cell(&count, &data, day), "2");
        assert_eq!(count.header(), "child/siblings_count");
        let missing = Column::Answer {
            path: "child/none".into(),
            kind: FieldKind::Text,
        };
        assert_eq!(cell(&missing, &data, day), "");
    }

    /// docs/field-classes.md is what the definitions say today.
    #[test]
    fn field_classes_doc_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/field-classes.md");
        let table = field_classes_markdown();
        if std::env::var_os("CASESYNC_WRITE_DOCS").is_some() {
            std::fs::write(&path, &table).unwrap();
        }
        let written = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            written == table,
            "docs/field-classes.md is stale: run CASESYNC_WRITE_DOCS=1 cargo test --lib field_classes"
        );
        // Narratives are free text and left out; dates keep their month.
        assert!(table.contains("| `kz.referral` | `child/child_name` | text | direct | left out |"));
    }

    #[test]
    fn the_deidentified_profile_leaves_out_free_text_and_keeps_months_of_events() {
        use Treatment::*;
        let quasi = Some(Pii::Quasi);
        let direct = Some(Pii::Direct);
        for (pii, kind, dob, expected) in [
            (None, FieldKind::Text, false, LeftOut),
            (quasi, FieldKind::Text, false, LeftOut),
            (None, FieldKind::List, false, LeftOut),
            (None, FieldKind::Attachment, false, LeftOut),
            (direct, FieldKind::SelectOne, false, LeftOut),
            (direct, FieldKind::Date, true, LeftOut),
            (quasi, FieldKind::Date, true, AgeAt),
            (None, FieldKind::Date, false, Month),
            (None, FieldKind::DateTime, false, Month),
            (quasi, FieldKind::SelectOne, false, Kept),
            (None, FieldKind::SelectMultiple, false, Kept),
            (None, FieldKind::Integer, false, Kept),
            (None, FieldKind::Boolean, false, Kept),
        ] {
            assert_eq!(treatment(pii, kind, dob), expected, "{pii:?} {kind:?}");
        }
    }
}
