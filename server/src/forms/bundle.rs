//! Bundling: a form with `$ref`s to shared blocks becomes one self-contained
//! document, every reference inlined. Our forms are not recursive, so
//! inlining terminates; a depth limit reports a cycle if one slips in.

use std::collections::HashMap;

use serde_json::{Map, Value};

/// Keywords that may stand beside a `$ref`: annotations only, which
/// override the referenced schema's when inlined.
fn is_annotation(key: &str) -> bool {
    key.starts_with("x-")
        || matches!(
            key,
            "title" | "description" | "$comment" | "examples" | "default" | "deprecated"
        )
}

const MAX_DEPTH: usize = 48;

/// Shared schema documents (`core/*.json`, programme vocabularies), by `$id`.
#[derive(Debug, Clone, Default)]
pub struct Resources {
    by_id: HashMap<String, Value>,
}

impl Resources {
    pub fn new() -> Self {
        Resources::default()
    }

    /// Adds a document that has an `$id`; returns an error otherwise.
    pub fn add(&mut self, doc: Value) -> Result<(), String> {
        let id = doc
            .get("$id")
            .and_then(Value::as_str)
            .ok_or_else(|| "a shared schema needs an \"$id\"".to_string())?
            .to_string();
        self.by_id.insert(id, doc);
        Ok(())
    }

    /// Adds every document of `other` whose `$id` this set lacks.
    pub fn fill_from(&mut self, other: &Resources) {
        for (id, doc) in &other.by_id {
            self.by_id.entry(id.clone()).or_insert_with(|| doc.clone());
        }
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.by_id.keys().map(String::as_str)
    }

    fn resolve(
        &self,
        reference: &str,
        base: &str,
        root: &Value,
    ) -> Result<(String, Value), String> {
        let (doc_id, fragment) = match reference.split_once('#') {
            Some(("", fragment)) => (base.to_string(), fragment),
            Some((doc, fragment)) => (doc.to_string(), fragment),
            None => (reference.to_string(), ""),
        };
        let doc = if root.get("$id").and_then(Value::as_str) == Some(doc_id.as_str()) {
            root
        } else {
            self.by_id
                .get(&doc_id)
                .ok_or_else(|| format!("unknown schema {doc_id:?}"))?
        };
        let target = doc
            .pointer(fragment)
            .ok_or_else(|| format!("{reference:?} points at nothing"))?;
        Ok((doc_id, target.clone()))
    }
}

/// Inlines every `$ref` of `form`, resolving against `resources` and the
/// form itself. Returns the bundled document, or every problem found, each
/// with the schema location where it occurs.
pub fn bundle(form: &Value, resources: &Resources) -> Result<Value, Vec<String>> {
    let base = form
        .get("$id")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let mut problems = Vec::new();
    let mut out = inline(form, &base, form, resources, "", 0, &mut problems);
    if let Value::Object(map) = &mut out {
        // Everything is inlined; the shared definitions are no longer needed.
        map.remove("$defs");
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

fn inline(
    node: &Value,
    base: &str,
    root: &Value,
    resources: &Resources,
    at: &str,
    depth: usize,
    problems: &mut Vec<String>,
) -> Value {
    if depth > MAX_DEPTH {
        problems.push(format!("{at}: references nest too deeply (a cycle?)"));
        return Value::Null;
    }
    match node {
        Value::Object(map) => {
            if let Some(reference) = map.get("$ref") {
                let Some(reference) = reference.as_str() else {
                    problems.push(format!("{at}/$ref: must be a string"));
                    return Value::Null;
                };
                for key in map.keys().filter(|k| *k != "$ref") {
                    if !is_annotation(key) {
                        problems.push(format!(
                            "{at}/{key}: only annotations (title, description, x-…) may stand beside $ref"
                        ));
                    }
                }
                let (target_base, target) = match resources.resolve(reference, base, root) {
                    Ok(found) => found,
                    Err(why) => {
                        problems.push(format!("{at}/$ref: {why}"));
                        return Value::Null;
                    }
                };
                let mut resolved = inline(
                    &target,
                    &target_base,
                    root,
                    resources,
                    at,
                    depth + 1,
                    problems,
                );
                if let Value::Object(resolved_map) = &mut resolved {
                    for (k, v) in map.iter().filter(|(k, _)| *k != "$ref") {
                        resolved_map.insert(k.clone(), v.clone());
                    }
                    // An inlined piece is not a resource of its own.
                    resolved_map.remove("$id");
                    resolved_map.remove("$schema");
                }
                resolved
            } else {
                let mut out = Map::with_capacity(map.len());
                for (k, v) in map {
                    let child_at = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                    out.insert(
                        k.clone(),
                        inline(v, base, root, resources, &child_at, depth, problems),
                    );
                }
                Value::Object(out)
            }
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    inline(
                        v,
                        base,
                        root,
                        resources,
                        &format!("{at}/{i}"),
                        depth,
                        problems,
                    )
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The sha256 of a bundled document, over its compact serialisation.
pub fn digest(bundled: &Value) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bundled.to_string().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn resources() -> Resources {
        let mut r = Resources::new();
        r.add(json!({
            "$id": "urn:test:types",
            "$defs": {
                "unknown": {"const": "unknown"},
                "date_or_unknown": {"anyOf": [{"type": "string", "format": "date"}, {"$ref": "#/$defs/unknown"}]},
                "dob": {"$ref": "#/$defs/date_or_unknown", "title": "Date of birth", "x-pii": "quasi"}
            }
        }))
        .unwrap();
        r
    }

    #[test]
    fn references_are_inlined_with_annotation_overrides() {
        let form = json!({
            "$id": "urn:casesync:form:t.x",
            "properties": {"dob": {"$ref": "urn:test:types#/$defs/dob", "title": "Born on"}}
        });
        let bundled = bundle(&form, &resources()).unwrap();
        assert_eq!(
            bundled["properties"]["dob"],
            json!({"anyOf": [{"type": "string", "format": "date"}, {"const": "unknown"}],
                   "title": "Born on", "x-pii": "quasi"})
        );
        assert!(!bundled.to_string().contains("$ref"));
        assert_eq!(digest(&bundled), digest(&bundled.clone()));
    }

    #[test]
    fn unknown_targets_and_constraining_siblings_are_reported() {
        let form = json!({
            "$id": "urn:casesync:form:t.x",
            "properties": {
                "a": {"$ref": "urn:test:nothing#/x"},
                "b": {"$ref": "urn:test:types#/$defs/unknown", "type": "integer"},
                "c": {"$ref": "urn:test:types#/$defs/missing"}
            }
        });
        let problems = bundle(&form, &resources()).unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("/properties/a/$ref"));
        assert!(problems[1].starts_with("/properties/b/type"));
    }
}
