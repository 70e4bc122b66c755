//! What changed between two versions of a form, field by field.

use serde::Serialize;
use serde_json::Value;

use super::model::{Field, FieldKind};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldChange {
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<(FieldKind, FieldKind)>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub options_added: Vec<Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub options_removed: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub required: Option<(bool, bool)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relevant_changed: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<FieldChange>,
}

pub fn diff(from: &[Field], to: &[Field]) -> Diff {
    let find = |list: &'_ [Field], path: &str| list.iter().position(|f| f.path == path);
    let added = to
        .iter()
        .filter(|f| find(from, &f.path).is_none())
        .map(|f| f.path.clone())
        .collect();
    let removed = from
        .iter()
        .filter(|f| find(to, &f.path).is_none())
        .map(|f| f.path.clone())
        .collect();
    let mut changed = Vec::new();
    for old in from {
        let Some(i) = find(to, &old.path) else {
            continue;
        };
        let new = &to[i];
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
            required: (old.required != new.required).then_some((old.required, new.required)),
            relevant_changed: (old.relevant != new.relevant).then_some(true),
        };
        let any = change.kind.is_some()
            || !change.options_added.is_empty()
            || !change.options_removed.is_empty()
            || change.required.is_some()
            || change.relevant_changed.is_some();
        if any {
            changed.push(change);
        }
    }
    Diff {
        added,
        removed,
        changed,
    }
}
