//! Answers files a person writes: `collect template` makes a starting one
//! from a synced form (JSON with `//` notes: every field's label, type,
//! whether it is required, when it applies and its allowed values), and
//! `collect fill` reads it back: notes are ignored and a `null` — or a
//! section or repeat entry holding nothing but nulls — means "not answered".

use serde_json::Value;

use crate::forms::model::{Field, FieldKind};
use crate::forms::relevance::{self, FieldRef, Predicate};

/// The form's fields as an answers file with notes.
pub fn render(title: &str, form_id: &str, version: &str, fields: &[Field]) -> String {
    let mut out = String::new();
    for line in [
        format!("// {title} ({form_id}, version {version})"),
        "// Replace each null with the answer. Leave null the questions that were not".into(),
        "// answered or do not apply. Lines starting with // are notes; they are ignored.".into(),
        "// Dates are written 2026-03-02 (year-month-day); a date and time with its zone,".into(),
        "// 2026-03-02T10:15:00+05:00. Texts go in double quotes; yes/no is true or false.".into(),
        format!("// Then: casesync collect fill {form_id} THIS_FILE"),
    ] {
        out.push_str(&line);
        out.push('\n');
    }
    render_object(fields, "", 0, &mut out);
    out.push('\n');
    out
}

fn parent_of(path: &str) -> &str {
    path.rsplit_once('/').map(|(p, _)| p).unwrap_or("")
}

fn render_object(fields: &[Field], prefix: &str, depth: usize, out: &mut String) {
    let pad = "  ".repeat(depth);
    out.push_str("{\n");
    let members: Vec<&Field> = fields
        .iter()
        .filter(|f| parent_of(&f.path) == prefix && f.path != prefix)
        .collect();
    for (i, field) in members.iter().enumerate() {
        let inner = format!("{pad}  ");
        for note in notes(fields, field) {
            out.push_str(&format!("{inner}// {note}\n"));
        }
        out.push_str(&format!("{inner}{}: ", Value::String(field.key.clone())));
        match field.kind {
            FieldKind::Section | FieldKind::Object => {
                render_object(fields, &field.path, depth + 1, out)
            }
            FieldKind::Repeat => {
                out.push_str(&format!("[\n{inner}  "));
                render_object(fields, &field.path, depth + 2, out);
                out.push_str(&format!("\n{inner}]"));
            }
            _ => out.push_str("null"),
        }
        if i + 1 < members.len() {
            out.push(',');
        }
        out.push('\n');
    }
    out.push_str(&format!("{pad}}}"));
}

/// The note lines above a field.
fn notes(fields: &[Field], field: &Field) -> Vec<String> {
    let label = relevance::label_of(field);
    let what = match field.kind {
        FieldKind::Section => "section".to_string(),
        FieldKind::Object => "a group of answers".to_string(),
        FieldKind::Repeat => {
            "a list of entries: copy the { } entry for each one, or leave it all null for none"
                .to_string()
        }
        FieldKind::Text => "text".to_string(),
        FieldKind::Date => "a date, YYYY-MM-DD".to_string(),
        FieldKind::DateTime => {
            "a date and time with its zone, YYYY-MM-DDTHH:MM:SS+05:00".to_string()
        }
        FieldKind::Integer => "a whole number".to_string(),
        FieldKind::Number => "a number".to_string(),
        FieldKind::Boolean => "true (yes) or false (no)".to_string(),
        FieldKind::SelectOne => "one of the values below".to_string(),
        FieldKind::SelectMultiple => {
            "a list of any of the values below, e.g. [\"a\", \"b\"]".to_string()
        }
        FieldKind::List => "a list of texts, e.g. [\"first\", \"second\"]".to_string(),
        FieldKind::Attachment => {
            "the name of a file (photo, scan) kept next to this answers file".to_string()
        }
    };
    let unknown = if field.accepts_unknown {
        ", or \"unknown\""
    } else {
        ""
    };
    let required = match (field.required, field.relevant.is_some()) {
        (true, true) => "required when it applies",
        (true, false) => "required",
        (false, _) => "optional",
    };
    let mut lines = vec![format!("{label}: {what}{unknown}; {required}")];
    if let Some(rule) = &field.relevant {
        if let Ok(predicate) = Predicate::<FieldRef>::parse(rule) {
            lines.push(format!(
                "  applies only when {}",
                predicate.describe_for(fields, field)
            ));
        }
    }
    for choice in &field.options {
        let label = choice.title.as_deref().unwrap_or("");
        lines.push(format!("  {} = {label}", choice.value));
    }
    lines
}

/// Reads an answers file: JSON, with `//` notes allowed outside strings.
pub fn parse(text: &str) -> Result<Value, String> {
    let mut data: Value =
        serde_json::from_str(&strip_notes(text)).map_err(|e| format!("not JSON: {e}"))?;
    if !data.is_object() {
        return Err("must be a JSON object".into());
    }
    drop_unanswered(&mut data);
    Ok(data)
}

/// The text with every `// …` note (outside strings) blanked, so line and
/// column numbers in JSON errors still point at the person's file.
fn strip_notes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        if c == '/' && chars.peek() == Some(&'/') {
            for rest in chars.by_ref() {
                if rest == '\n' {
                    out.push('\n');
                    break;
                }
                out.push(' ');
            }
            continue;
        }
        if c == '"' {
            in_string = true;
        }
        out.push(c);
    }
    out
}

/// Removes nulls, and objects and array items left empty by removing them
/// (what was written empty stays: `[]` is an answer).
fn drop_unanswered(value: &mut Value) -> bool {
    match value {
        Value::Null => false,
        Value::Object(map) => {
            let before = map.len();
            map.retain(|_, v| drop_unanswered(v));
            before == 0 || !map.is_empty()
        }
        Value::Array(items) => {
            let before = items.len();
            items.retain_mut(drop_unanswered);
            before == 0 || !items.is_empty()
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn notes_and_unanswered_questions_are_left_out() {
        let text = r#"// a note
{
  "a": "keeps // inside \" strings", // trailing note
  "b": null,
  "s": { "x": null },
  "r": [ { "y": null }, { "y": 1 } ],
  "e": []
}"#;
        assert_eq!(
            parse(text).unwrap(),
            json!({"a": "keeps // inside \" strings", "r": [{"y": 1}], "e": []})
        );
        assert!(parse("[1]").is_err());
    }

    #[test]
    fn a_template_reads_back_as_nothing_answered() {
        let form = json!({"title": "T", "properties": {
            "child": {"type": "object", "x-section": {"code": "B"}, "required": ["sex"], "properties": {
                "sex": {"type": "string", "title": "Sex:", "oneOf": [{"const": "f", "title": "Female"}]},
                "siblings": {"type": "array", "x-relevant": {"field": "0/sex", "eq": "f"},
                    "items": {"type": "object", "properties": {"dob": {"type": "string", "format": "date"}}}}
            }}
        }});
        let fields = crate::forms::model::fields(&form);
        let text = render("T", "x.t", "1", &fields);
        assert!(
            text.contains("// Sex: one of the values below; required"),
            "{text}"
        );
        assert!(text.contains("//   \"f\" = Female"), "{text}");
        assert!(
            text.contains("applies only when \"Sex\" is \"Female\""),
            "{text}"
        );
        assert!(text.contains("a date, YYYY-MM-DD"), "{text}");
        assert_eq!(parse(&text).unwrap(), json!({}));
    }
}
