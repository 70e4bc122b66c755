//! Form fixtures (`tests/fixtures/forms/<form id>/`): a filled example that
//! must pass, broken variants that must fail at exactly the expected
//! pointers, and the extract's field list that must all be in the form.
//! Used by `casesync forms validate --fixtures` and by the test suite.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::validate::CompiledForm;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default)]
    remove: Vec<String>,
    #[serde(default)]
    set: Map<String, Value>,
    errors: Vec<String>,
}

/// What running one form's fixtures found; `failures` empty means all good.
#[derive(Debug, Default)]
pub struct Report {
    pub cases: usize,
    pub fields_listed: usize,
    pub failures: Vec<String>,
}

fn read_json(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn tokens(pointer: &str) -> Vec<String> {
    pointer
        .trim_start_matches('/')
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect()
}

fn remove_at(data: &mut Value, pointer: &str) -> bool {
    let mut t = tokens(pointer);
    let Some(last) = t.pop() else { return false };
    let parent = match data.pointer_mut(&pointer[..pointer.len() - last.len() - 1]) {
        Some(p) => p,
        None if t.is_empty() => data,
        None => return false,
    };
    match parent {
        Value::Object(map) => map.shift_remove(&last).is_some(),
        Value::Array(items) => match last.parse::<usize>() {
            Ok(i) if i < items.len() => {
                items.remove(i);
                true
            }
            _ => false,
        },
        _ => false,
    }
}

fn set_at(data: &mut Value, pointer: &str, value: Value) -> bool {
    let mut node = data;
    let t = tokens(pointer);
    for (i, token) in t.iter().enumerate() {
        let last = i + 1 == t.len();
        node = match node {
            Value::Object(map) => {
                if last {
                    map.insert(token.clone(), value);
                    return true;
                }
                map.entry(token.clone())
                    .or_insert_with(|| Value::Object(Map::new()))
            }
            Value::Array(items) => {
                let Ok(index) = token.parse::<usize>() else {
                    return false;
                };
                let Some(item) = items.get_mut(index) else {
                    return false;
                };
                if last {
                    *item = value;
                    return true;
                }
                item
            }
            _ => return false,
        };
    }
    false
}

/// Runs the fixtures in `dir` against `form`.
pub fn run(form: &CompiledForm, dir: &Path) -> Report {
    let mut report = Report::default();
    let valid = match read_json(&dir.join("valid.json")) {
        Ok(v) => v,
        Err(e) => {
            report.failures.push(format!("valid.json: {e}"));
            return report;
        }
    };
    for error in form.validate(&valid) {
        report.failures.push(format!(
            "valid.json fails at {}: {}",
            error.pointer, error.message
        ));
    }

    match read_json(&dir.join("invalid.json")).and_then(|v| {
        serde_json::from_value::<Vec<Case>>(v).map_err(|e| format!("invalid.json: {e}"))
    }) {
        Err(e) => report.failures.push(e),
        Ok(cases) => {
            if cases.is_empty() {
                report.failures.push("invalid.json has no cases".into());
            }
            for case in cases {
                report.cases += 1;
                let mut data = valid.clone();
                for pointer in &case.remove {
                    if !remove_at(&mut data, pointer) {
                        report.failures.push(format!(
                            "case {:?}: nothing to remove at {pointer}",
                            case.name
                        ));
                    }
                }
                for (pointer, value) in case.set {
                    if !set_at(&mut data, &pointer, value) {
                        report
                            .failures
                            .push(format!("case {:?}: cannot set {pointer}", case.name));
                    }
                }
                let expected: BTreeSet<String> = case.errors.into_iter().collect();
                let found: BTreeSet<String> = form
                    .validate(&data)
                    .into_iter()
                    .map(|e| e.pointer)
                    .collect();
                if expected != found {
                    let missing: Vec<_> = expected.difference(&found).collect();
                    let unexpected: Vec<_> = found.difference(&expected).collect();
                    report.failures.push(format!(
                        "case {:?}: expected errors not reported {missing:?}; unexpected errors {unexpected:?}",
                        case.name
                    ));
                }
            }
        }
    }

    match std::fs::read_to_string(dir.join("fields.txt")) {
        Err(e) => report.failures.push(format!("fields.txt: {e}")),
        Ok(text) => {
            let paths: BTreeSet<&str> = form.fields.iter().map(|f| f.path.as_str()).collect();
            for line in text.lines().map(str::trim) {
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                report.fields_listed += 1;
                if !paths.contains(line) {
                    report
                        .failures
                        .push(format!("fields.txt: {line:?} is not a field of the form"));
                }
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pointers_set_and_remove_into_objects_and_arrays() {
        let mut v = json!({"a": {"b": 1}, "list": [{"x": 1}, {"x": 2}]});
        assert!(remove_at(&mut v, "/a/b"));
        assert!(set_at(&mut v, "/list/1/x", json!(3)));
        assert!(set_at(&mut v, "/new/deep", json!(true)));
        assert!(remove_at(&mut v, "/list/0"));
        assert_eq!(
            v,
            json!({"a": {}, "list": [{"x": 3}], "new": {"deep": true}})
        );
        assert!(!remove_at(&mut v, "/nothing/here"));
        assert!(!set_at(&mut v, "/list/5/x", json!(1)));
    }
}
