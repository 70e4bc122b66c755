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
    /// Where its answer is in the submission's `data` (a JSON pointer,
    /// `/section/field`, `/group/0/field` in a repeat item).
    pub pointer: String,
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
    /// Not answered: shown only where something is said about it
    /// ([`labelled_with`]).
    Unanswered,
}

/// The answered fields of `data` (a submission's `data`), in form order.
/// Fields not answered are left out.
pub fn labelled(fields: &[Field], data: &Value) -> Vec<Line> {
    labelled_with(fields, data, &|_| false)
}

/// [`labelled`], with a line ([`Shown::Unanswered`]) for each field not
/// answered whose pointer `named` names (a missing answer a problem is
/// about, beside the answers it belongs with).
pub fn labelled_with(fields: &[Field], data: &Value, named: &dyn Fn(&str) -> bool) -> Vec<Line> {
    let mut children: HashMap<&str, Vec<&Field>> = HashMap::new();
    for field in fields {
        let parent = field.path.rsplit_once('/').map_or("", |(p, _)| p);
        children.entry(parent).or_default().push(field);
    }
    let mut lines = Vec::new();
    let at = Place {
        parent: "",
        pointer: "",
        depth: 0,
        discussion: false,
    };
    walk(&children, at, data, named, &mut lines);
    lines
}

/// Where [`walk`] is: the parent field's path, its pointer in the data.
#[derive(Clone, Copy)]
struct Place<'a> {
    parent: &'a str,
    pointer: &'a str,
    depth: usize,
    discussion: bool,
}

fn title(field: &Field) -> String {
    field.title.clone().unwrap_or_else(|| field.key.clone())
}

fn walk(
    children: &HashMap<&str, Vec<&Field>>,
    at: Place,
    data: &Value,
    named: &dyn Fn(&str) -> bool,
    lines: &mut Vec<Line>,
) {
    let Some(fields) = children.get(at.parent) else {
        return;
    };
    for field in fields {
        let discussion = at.discussion || field.professional_discussion;
        let pointer = format!(
            "{}/{}",
            at.pointer,
            field.key.replace('~', "~0").replace('/', "~1")
        );
        let line = |pointer: &str, depth: usize, label: String, value: Shown| Line {
            pointer: pointer.to_string(),
            depth,
            label,
            value,
            professional_discussion: discussion,
        };
        let Some(value) = data.get(&field.key).filter(|v| !v.is_null()) else {
            if named(&pointer) {
                lines.push(line(&pointer, at.depth, title(field), Shown::Unanswered));
            }
            continue;
        };
        match field.kind {
            FieldKind::Section | FieldKind::Object => {
                lines.push(line(&pointer, at.depth, title(field), Shown::Heading));
                let next = Place {
                    parent: &field.path,
                    pointer: &pointer,
                    depth: at.depth + 1,
                    discussion,
                };
                walk(children, next, value, named, lines);
            }
            FieldKind::Repeat => {
                let items = value.as_array().map(Vec::as_slice).unwrap_or_default();
                lines.push(line(&pointer, at.depth, title(field), Shown::Heading));
                for (i, item) in items.iter().enumerate() {
                    let item_pointer = format!("{pointer}/{i}");
                    lines.push(line(
                        &item_pointer,
                        at.depth + 1,
                        format!("{} {}", title(field), i + 1),
                        Shown::Heading,
                    ));
                    let next = Place {
                        parent: &field.path,
                        pointer: &item_pointer,
                        depth: at.depth + 2,
                        discussion,
                    };
                    walk(children, next, item, named, lines);
                }
            }
            _ => lines.push(line(&pointer, at.depth, title(field), shown(field, value))),
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

    #[test]
    fn lines_carry_their_pointers_and_a_named_unanswered_field_gets_a_line() {
        let form = json!({
            "properties": {
                "child": {
                    "type": "object", "title": "The child",
                    "properties": {
                        "name": {"type": "string", "title": "Name"},
                        "age": {"type": "integer", "title": "Age"},
                        "siblings": {"type": "array", "title": "Siblings",
                                     "items": {"type": "object", "properties": {"name": {"type": "string", "title": "Name"}}}}
                    }
                }
            }
        });
        let f = fields(&form);
        let data = json!({"child": {"name": "A", "siblings": [{"name": "B"}]}});
        let lines = labelled_with(&f, &data, &|p| p == "/child/age");
        let seen: Vec<(&str, &str, &Shown)> = lines
            .iter()
            .map(|l| (l.pointer.as_str(), l.label.as_str(), &l.value))
            .collect();
        assert_eq!(
            seen,
            [
                ("/child", "The child", &Shown::Heading),
                ("/child/name", "Name", &Shown::Text("A".into())),
                ("/child/age", "Age", &Shown::Unanswered),
                ("/child/siblings", "Siblings", &Shown::Heading),
                ("/child/siblings/0", "Siblings 1", &Shown::Heading),
                ("/child/siblings/0/name", "Name", &Shown::Text("B".into())),
            ]
        );
        // Unnamed, an unanswered field is left out, as before.
        assert_eq!(labelled(&f, &data).len(), 5);
    }
}
