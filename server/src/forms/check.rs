//! Checks a form definition before it may be published: the 2020-12
//! meta-schema, then casesync's vocabulary (docs/forms.md), then compiles it.

use serde_json::Value;

use super::bundle::{self, Resources};
use super::model::{FieldKind, FormMeta};
use super::relevance::{FieldRef, Predicate};
use super::validate::CompiledForm;

pub const DRAFT_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";

const X_KEYWORDS: [&str; 10] = [
    "x-form",
    "x-labels",
    "x-relevant",
    "x-pii",
    "x-sensitive",
    "x-fact",
    "x-attachment",
    "x-section",
    "x-professional-discussion",
    "x-case-number",
];

/// Checks and compiles a form. `Err` lists every problem found, each with
/// the schema location it concerns.
pub fn check(form: &Value, resources: &Resources) -> Result<CompiledForm, Vec<String>> {
    let mut problems = Vec::new();
    if form.get("$schema").and_then(Value::as_str) != Some(DRAFT_2020_12) {
        problems.push(format!("/$schema: must be {DRAFT_2020_12:?}"));
    }
    let bundled = bundle::bundle(form, resources)?;
    if let Err(e) = jsonschema::meta::validate(&bundled) {
        problems.push(format!(
            "{}: not a valid JSON Schema 2020-12: {}",
            e.instance_path().as_str(),
            e.masked()
        ));
        return Err(problems);
    }
    walk(&bundled, "", true, &mut problems);
    let compiled = match CompiledForm::compile(bundled) {
        Ok(c) => c,
        Err(mut more) => {
            problems.append(&mut more);
            return Err(problems);
        }
    };
    check_meta(&compiled.meta, form, &mut problems);
    check_fields(&compiled, &mut problems);
    if problems.is_empty() {
        Ok(compiled)
    } else {
        Err(problems)
    }
}

fn check_meta(meta: &FormMeta, form: &Value, problems: &mut Vec<String>) {
    let (programme, name) = meta.id.split_once('.').unwrap_or(("", ""));
    let name_ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !name_ok || programme != meta.programme {
        problems.push(format!(
            "/x-form/id: must be \"<programme>.<name>\" in lowercase snake_case, with the programme of x-form.programme, not {:?}",
            meta.id
        ));
    }
    if !crate::auth::sites::PROGRAMMES.contains(&meta.programme.as_str()) {
        problems.push("/x-form/programme: must be \"kz\" or \"bt\"".into());
    }
    let version_ok = meta.version.len() <= 32
        && meta
            .version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    if !version_ok {
        problems.push("/x-form/version: up to 32 letters, digits, '.' or '-'".into());
    }
    let expected_id = format!("urn:casesync:form:{}", meta.id);
    if form.get("$id").and_then(Value::as_str) != Some(expected_id.as_str()) {
        problems.push(format!("/$id: must be {expected_id:?}"));
    }
    if !meta
        .event
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        problems.push("/x-form/event: lowercase snake_case".into());
    }
}

fn check_fields(form: &CompiledForm, problems: &mut Vec<String>) {
    let paths: Vec<Vec<String>> = form
        .fields
        .iter()
        .map(|f| tokens_of_path(&f.path))
        .collect();
    let occurred = tokens_of_pointer(form.meta.occurred_at.trim_start_matches('/'));
    match form
        .fields
        .iter()
        .zip(&paths)
        .find(|(_, p)| **p == occurred)
    {
        Some((field, _)) if matches!(field.kind, FieldKind::Date | FieldKind::DateTime) => {
            if field.relevant.is_some() || field.path.contains("[]") {
                problems.push("/x-form/occurred_at: must point at an unconditional field outside repeat groups".into());
            }
        }
        Some(_) => {
            problems.push("/x-form/occurred_at: must point at a date or date-time field".into())
        }
        None => problems.push(format!(
            "/x-form/occurred_at: {:?} is not a field of the form",
            form.meta.occurred_at
        )),
    }
    for (field, path) in form.fields.iter().zip(&paths) {
        let Some(rule) = &field.relevant else {
            continue;
        };
        let Ok(predicate) = Predicate::<FieldRef>::parse(rule) else {
            continue;
        };
        // The object holding the field: for a repeat group, the object
        // holding the group, not its items.
        let mut base = path.clone();
        base.pop();
        if field.kind == FieldKind::Repeat {
            base.pop();
        }
        for reference in predicate.refs() {
            let target = match reference {
                FieldRef::Absolute(t) => {
                    Some(t.iter().map(|s| index_to_item(s)).collect::<Vec<_>>())
                }
                FieldRef::Relative { .. } => reference
                    .resolve(&base)
                    .map(|t| t.iter().map(|s| index_to_item(s)).collect()),
            };
            if !target.as_ref().is_some_and(|t| paths.contains(t)) {
                problems.push(format!(
                    "{}/x-relevant: refers to a field the form does not have",
                    field.schema_pointer
                ));
            }
        }
    }
}

/// `child/siblings[]/dob` → [child, siblings, [], dob]
pub(super) fn tokens_of_path(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    for segment in path.split('/') {
        match segment.strip_suffix("[]") {
            Some(key) => {
                out.push(key.to_string());
                out.push("[]".to_string());
            }
            None => out.push(segment.to_string()),
        }
    }
    out
}

pub(super) fn tokens_of_pointer(pointer: &str) -> Vec<String> {
    pointer.split('/').map(index_to_item).collect()
}

/// An array index in a pointer stands for "an item of the repeat group".
fn index_to_item(token: &str) -> String {
    if !token.is_empty() && token.chars().all(|c| c.is_ascii_digit()) {
        "[]".to_string()
    } else {
        token.to_string()
    }
}

/// Walks every subschema: our keywords must be well-formed, and every object
/// with properties must refuse unknown ones.
fn walk(schema: &Value, at: &str, is_root: bool, problems: &mut Vec<String>) {
    walk_schema(schema, at, is_root, true, problems)
}

/// `defines_fields` is false under `if` / `then` / `else` / `not` /
/// `allOf`: there `properties` states a condition and defines no fields.
fn walk_schema(
    schema: &Value,
    at: &str,
    is_root: bool,
    defines_fields: bool,
    problems: &mut Vec<String>,
) {
    let Value::Object(map) = schema else { return };
    for (key, value) in map {
        let here = format!("{at}/{key}");
        if key.starts_with("x-") {
            if !X_KEYWORDS.contains(&key.as_str()) {
                problems.push(format!("{here}: unknown keyword (see docs/forms.md)"));
            }
            check_keyword(key, value, is_root, &here, problems);
            continue;
        }
        let condition = matches!(
            key.as_str(),
            "if" | "then" | "else" | "not" | "contains" | "allOf"
        );
        let keeps = defines_fields && !condition;
        match value {
            Value::Object(_) if key != "const" && key != "default" => {
                walk_schema(value, &here, false, keeps, problems)
            }
            Value::Array(items)
                if matches!(key.as_str(), "oneOf" | "anyOf" | "allOf" | "prefixItems") =>
            {
                for (i, item) in items.iter().enumerate() {
                    walk_schema(item, &format!("{here}/{i}"), false, keeps, problems);
                }
            }
            _ => {}
        }
    }
    if defines_fields
        && map.contains_key("properties")
        && map.get("additionalProperties") != Some(&Value::Bool(false))
    {
        problems.push(format!(
            "{at}: an object must set \"additionalProperties\": false"
        ));
    }
    let is_array = match map.get("type") {
        Some(Value::String(t)) => t == "array",
        Some(Value::Array(types)) => types.iter().any(|t| t == "array"),
        _ => false,
    };
    if defines_fields && is_array && !map.get("maxItems").is_some_and(Value::is_u64) {
        problems.push(format!(
            "{at}: an array must set \"maxItems\", the most items a real case could need (docs/forms.md § Limits)"
        ));
    }
}

fn check_keyword(key: &str, value: &Value, is_root: bool, at: &str, problems: &mut Vec<String>) {
    let ok = match key {
        "x-form" => is_root && value.is_object(),
        "x-pii" => matches!(value.as_str(), Some("direct" | "quasi")),
        "x-sensitive" | "x-professional-discussion" => value.is_boolean(),
        "x-case-number" => value == &Value::Bool(true),
        "x-fact" => value.as_str().is_some_and(|f| {
            f.split('.').all(|part| {
                !part.is_empty()
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            })
        }),
        "x-attachment" => {
            value
                .get("media_types")
                .and_then(Value::as_array)
                .is_some_and(|m| !m.is_empty() && m.iter().all(Value::is_string))
                && value
                    .get("max_bytes")
                    .and_then(Value::as_u64)
                    .is_some_and(|n| n > 0)
        }
        "x-labels" => value
            .as_object()
            .is_some_and(|m| m.values().all(Value::is_string)),
        "x-section" => value.is_object(),
        "x-relevant" => {
            if let Err(why) = Predicate::<FieldRef>::parse(value) {
                problems.push(format!("{at}: {why}"));
            }
            true
        }
        _ => true,
    };
    if !ok {
        let expected = match key {
            "x-form" => "an object, at the root only",
            "x-pii" => "\"direct\" or \"quasi\"",
            "x-fact" => {
                "a lowercase name, dotted for a subject, such as \"child.sex\" or \"risk_level\""
            }
            "x-attachment" => "{\"media_types\": [..], \"max_bytes\": n}",
            "x-labels" => "an object of language → label",
            "x-section" => "an object",
            _ => "true or false",
        };
        problems.push(format!("{at}: must be {expected}"));
    }
}
