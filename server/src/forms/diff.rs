//! What changed between two versions of a form: the form's own title,
//! description and labels, and field by field its kind, options, option
//! labels, requiredness, relevance, title, description and `x-labels` —
//! everything a phone shows or checks.

use serde::Serialize;
use serde_json::Value;

use super::model::{Field, FieldKind};
use super::validate::CompiledForm;

/// A text or value that differs between two versions: `[before, after]`,
/// `null` where one version has none.
pub type Change<T> = Option<(Option<T>, Option<T>)>;

fn change<T: PartialEq>(before: Option<T>, after: Option<T>) -> Change<T> {
    (before != after).then_some((before, after))
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldChange {
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<(FieldKind, FieldKind)>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub options_added: Vec<Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub options_removed: Vec<Value>,
    /// Options kept whose label (`title` or `x-labels`) changed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub options_relabelled: Vec<OptionLabel>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub required: Option<(bool, bool)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relevant_changed: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Change<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Change<String>,
    #[serde(rename = "x-labels", skip_serializing_if = "Option::is_none")]
    pub labels: Change<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OptionLabel {
    pub value: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Change<String>,
    #[serde(rename = "x-labels", skip_serializing_if = "Option::is_none")]
    pub labels: Change<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diff {
    /// The form's own title, description and `x-labels`, when they changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Change<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Change<String>,
    #[serde(rename = "x-labels", skip_serializing_if = "Option::is_none")]
    pub labels: Change<Value>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<FieldChange>,
}

fn text(schema: &Value, key: &str) -> Option<String> {
    schema.get(key).and_then(Value::as_str).map(str::to_string)
}

fn labels(schema: &Value) -> Option<Value> {
    schema.get("x-labels").cloned()
}

/// The option schemas (`{"const": …, "title": …}`) of a field's schema,
/// wherever the model found them: the field's own `oneOf`/`anyOf`, or its
/// items' for a select-multiple.
fn option_schemas(schema: &Value) -> Vec<&Value> {
    let lists = [schema, schema.get("items").unwrap_or(&Value::Null)]
        .into_iter()
        .flat_map(|s| [s.get("oneOf"), s.get("anyOf")])
        .flatten()
        .filter_map(Value::as_array);
    lists
        .flatten()
        .filter(|o| o.get("const").is_some())
        .collect()
}

fn relabelled(old: &Value, new: &Value) -> Vec<OptionLabel> {
    let new_options = option_schemas(new);
    option_schemas(old)
        .into_iter()
        .filter_map(|before| {
            let after = new_options.iter().find(|o| o["const"] == before["const"])?;
            let label = OptionLabel {
                value: before["const"].clone(),
                title: change(text(before, "title"), text(after, "title")),
                labels: change(labels(before), labels(after)),
            };
            (label.title.is_some() || label.labels.is_some()).then_some(label)
        })
        .collect()
}

pub fn diff(from: &CompiledForm, to: &CompiledForm) -> Diff {
    let (old_doc, new_doc) = (from.document.as_ref(), to.document.as_ref());
    let schema_of = |doc: &'_ Value, f: &Field| -> Value {
        doc.pointer(&f.schema_pointer).cloned().unwrap_or_default()
    };
    let find = |list: &'_ [Field], path: &str| list.iter().position(|f| f.path == path);
    let added = to
        .fields
        .iter()
        .filter(|f| find(&from.fields, &f.path).is_none())
        .map(|f| f.path.clone())
        .collect();
    let removed = from
        .fields
        .iter()
        .filter(|f| find(&to.fields, &f.path).is_none())
        .map(|f| f.path.clone())
        .collect();
    let mut changed = Vec::new();
    for old in &from.fields {
        let Some(i) = find(&to.fields, &old.path) else {
            continue;
        };
        let new = &to.fields[i];
        let (old_schema, new_schema) = (schema_of(old_doc, old), schema_of(new_doc, new));
        let values = |f: &Field| {
            f.options
                .iter()
                .map(|o| o.value.clone())
                .collect::<Vec<_>>()
        };
        let (old_values, new_values) = (values(old), values(new));
        let change = FieldChange {
            path: old.path.clone(),
            kind: (old.kind != new.kind).then_some((old.kind, new.kind)),
            options_added: new_values
                .iter()
                .filter(|v| !old_values.contains(v))
                .cloned()
                .collect(),
            options_removed: old_values
                .iter()
                .filter(|v| !new_values.contains(v))
                .cloned()
                .collect(),
            options_relabelled: relabelled(&old_schema, &new_schema),
            required: (old.required != new.required).then_some((old.required, new.required)),
            relevant_changed: (old.relevant != new.relevant).then_some(true),
            title: change(old.title.clone(), new.title.clone()),
            description: change(
                text(&old_schema, "description"),
                text(&new_schema, "description"),
            ),
            labels: change(labels(&old_schema), labels(&new_schema)),
        };
        let any = change.kind.is_some()
            || !change.options_added.is_empty()
            || !change.options_removed.is_empty()
            || !change.options_relabelled.is_empty()
            || change.required.is_some()
            || change.relevant_changed.is_some()
            || change.title.is_some()
            || change.description.is_some()
            || change.labels.is_some();
        if any {
            changed.push(change);
        }
    }
    Diff {
        title: change(Some(from.meta.title.clone()), Some(to.meta.title.clone())),
        description: change(text(old_doc, "description"), text(new_doc, "description")),
        labels: change(labels(old_doc), labels(new_doc)),
        added,
        removed,
        changed,
    }
}
