//! A submission's answers as people read them: in the form's order, each
//! under its question's title, choices by their titles, repeat items
//! numbered, sections as headings (the professional-discussion ones
//! marked). What a screen shows; no rule of validation lives here.

use std::collections::HashMap;

use serde_json::Value;

use super::model::{Field, FieldKind};

/// One line of the answers.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// How deep in sections and repeat items (0 at the top).
    pub depth: usize,
    pub label: String,
    pub value: Shown,
    /// Within a section the form marks `x-professional-discussion`.
    pub professional_discussion: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Shown {
    /// A section, a repeat group or one of its items: what follows is in it.
    Heading,
    Text(String),
    Yes,
    No,
}

/// The answered fields of `data` (a submission's `data`), in form order.
/// Fields not answered are left out.
pub fn labelled(fields: &[Field], data: &Value) -> Vec<Line> {
    let mut children: HashMap<&str, Vec<&Field>> = HashMap::new();
    for field in fields {
        let parent = field.path.rsplit_once('/').map_or("", |(p, _)| p);
        children.entry(parent).or_default().push(field);
    }
    let mut lines = Vec::new();
    walk(&children, "", data, 0, false, &mut lines);
    lines
}

fn title(field: &Field) -> String {
    field.title.clone().unwrap_or_else(|| field.key.clone())
}

fn walk(
    children: &HashMap<&str, Vec<&Field>>,
    parent: &str,
    data: &Value,
    depth: usize,
    discussion: bool,
    lines: &mut Vec<Line>,
) {
    let Some(fields) = children.get(parent) else {
        return;
    };
    for field in fields {
        let Some(value) = data.get(&field.key).filter(|v| !v.is_null()) else {
            continue;
        };
        let discussion = discussion || field.professional_discussion;
        let line = |depth: usize, label: String, value: Shown| Line {
            depth,
            label,
            value,
            professional_discussion: discussion,
        };
        match field.kind {
            FieldKind::Section | FieldKind::Object => {
                lines.push(line(depth, title(field), Shown::Heading));
                walk(children, &field.path, value, depth + 1, discussion, lines);
            }
            FieldKind::Repeat => {
                let items = value.as_array().map(Vec::as_slice).unwrap_or_default();
                lines.push(line(depth, title(field), Shown::Heading));
                for (i, item) in items.iter().enumerate() {
                    lines.push(line(
                        depth + 1,
                        format!("{} {}", title(field), i + 1),
                        Shown::Heading,
                    ));
                    walk(children, &field.path, item, depth + 2, discussion, lines);
                }
            }
            _ => lines.push(line(depth, title(field), shown(field, value))),
        }
    }
}

/// A single answer as text: a choice by its title, a file by its name.
fn shown(field: &Field, value: &Value) -> Shown {
    let choice = |v: &Value| {
        field
            .options
            .iter()
            .find(|c| c.value == *v)
            .and_then(|c| c.title.clone())
            .unwrap_or_else(|| plain(v))
    };
    match (field.kind, value) {
        (_, Value::Bool(true)) => Shown::Yes,
        (_, Value::Bool(false)) => Shown::No,
        (FieldKind::SelectOne, v) => Shown::Text(choice(v)),
        (FieldKind::SelectMultiple | FieldKind::List, Value::Array(items)) => Shown::Text(
            items
                .iter()
                .map(|v| {
                    if field.options.is_empty() {
                        plain(v)
                    } else {
                        choice(v)
                    }
                })
                .collect::<Vec<_>>()
                .join(", "),
        ),
        (FieldKind::Attachment, v) => Shown::Text(
            v.get("name")
                .or_else(|| v.get("filename"))
                .map(plain)
                .unwrap_or_else(|| plain(v)),
        ),
        (_, v) => Shown::Text(plain(v)),
    }
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forms::model::fields;
    use serde_json::json;

    #[test]
    fn answers_read_in_form_order_with_titles_choices_and_numbered_items() {
        let form = json!({
            "properties": {
                "child": {
                    "type": "object", "title": "The child",
                    "properties": {
                        "sex": {"type": "string", "title": "Sex",
                                "oneOf": [{"const": "female", "title": "Girl"}, {"const": "male", "title": "Boy"}]},
                        "siblings": {"type": "array", "title": "Siblings",
                                     "items": {"type": "object", "properties": {"name": {"type": "string", "title": "Name"}}}},
                        "in_school": {"type": "boolean", "title": "In school"}
                    }
                },
                "discussion": {"type": "object", "title": "Discussion", "x-professional-discussion": true,
                               "properties": {"note": {"type": "string"}}}
            }
        });
        let f = fields(&form);
        let data = json!({"child": {"sex": "female", "siblings": [{"name": "A"}, {"name": "B"}], "in_school": false},
                          "discussion": {"note": "said in confidence"}});
        let lines = labelled(&f, &data);
        let text: Vec<(usize, &str, &Shown, bool)> = lines
            .iter()
            .map(|l| {
                (
                    l.depth,
                    l.label.as_str(),
                    &l.value,
                    l.professional_discussion,
                )
            })
            .collect();
        assert_eq!(
            text,
            [
                (0, "The child", &Shown::Heading, false),
                (1, "Sex", &Shown::Text("Girl".into()), false),
                (1, "Siblings", &Shown::Heading, false),
                (2, "Siblings 1", &Shown::Heading, false),
                (3, "Name", &Shown::Text("A".into()), false),
                (2, "Siblings 2", &Shown::Heading, false),
                (3, "Name", &Shown::Text("B".into()), false),
                (1, "In school", &Shown::No, false),
                (0, "Discussion", &Shown::Heading, true),
                (1, "note", &Shown::Text("said in confidence".into()), true),
            ]
        );
    }
}
