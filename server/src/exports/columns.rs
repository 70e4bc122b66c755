//! The columns of a form's CSV export: the union of every published
//! version's fields in form order (the newest version's order, then fields
//! only older versions had), with select-multiple questions as one
//! space-separated column plus a 0/1 column per option, and repeat groups
//! as their item count. De-identified by default: `x-pii: direct` columns
//! are left out; of the `quasi` ones a date of birth becomes the age in
//! years when the form's event happened, other dates keep their month,
//! categories (sex, nationality) stay — the manuals disaggregate by them —
//! and free text (places, addresses) is left out: the row's site says where.

use chrono::{Datelike, NaiveDate};
use serde_json::Value;

use crate::forms::model::{Field, FieldKind, Pii};

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

fn columns_of(field: &Field, privacy: Privacy) -> Vec<Column> {
    let inside_repeat = field.path.trim_end_matches("[]").contains("[]");
    if inside_repeat {
        // Items of repeat groups go to their own files in the .zip export.
        return Vec::new();
    }
    if privacy == Privacy::Deidentified {
        match field.pii {
            Some(Pii::Direct) => return Vec::new(),
            Some(Pii::Quasi) => match field.kind {
                FieldKind::Date if is_date_of_birth(field) => {
                    return vec![Column::AgeAt {
                        path: field.path.clone(),
                    }]
                }
                FieldKind::Date | FieldKind::DateTime => {
                    return vec![Column::Month {
                        path: field.path.clone(),
                    }]
                }
                FieldKind::SelectOne
                | FieldKind::SelectMultiple
                | FieldKind::Boolean
                | FieldKind::Integer
                | FieldKind::Number
                | FieldKind::Repeat => {}
                _ => return Vec::new(),
            },
            None => {}
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
    for fields in versions {
        for group in fields.iter().filter(|f| f.kind == FieldKind::Repeat) {
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

/// Whole years from `born` to `on`.
pub fn age_in_years(born: NaiveDate, on: NaiveDate) -> Option<i32> {
    let mut years = on.year() - born.year();
    if (on.month(), on.day()) < (born.month(), born.day()) {
        years -= 1;
    }
    (years >= 0).then_some(years)
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
}
