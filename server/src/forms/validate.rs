//! A published form version compiled for validation: the JSON Schema
//! validator plus the `x-relevant` rules, built once and reused.

use std::collections::HashSet;
use std::sync::Arc;

use jsonschema::error::ValidationErrorKind;
use jsonschema::{Draft, Validator};
use serde_json::Value;

use super::model::{self, Field, FieldKind, FormMeta};
use super::relevance::{self, FieldRef, Predicate};
use crate::error::FieldError;

/// One step from a form's root to a field in the data.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    EachItem,
}

#[derive(Debug)]
struct Conditional {
    /// Steps to the object that holds the field.
    parent: Vec<Step>,
    key: String,
    predicate: Predicate,
    /// Human wording of when the question applies, for error messages.
    condition: String,
    /// Where the field's schema sits: one report per location.
    schema_pointer: String,
}

/// An array's most items, checked before anything else (`maxItems`).
#[derive(Debug)]
struct ArrayLimit {
    /// Steps from the root to the array.
    steps: Vec<Step>,
    max_items: usize,
}

/// Most items of an array of a version frozen before every array had to
/// state its `maxItems` (docs/forms.md § Limits).
pub const LEGACY_MAX_ITEMS: usize = 1000;

/// Most problems a report lists; the rest are only counted.
pub const MAX_LISTED: usize = 100;

/// What is wrong with a submission's data: at most [`MAX_LISTED`] problems,
/// at most one per schema location, and how many more were found.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Report {
    pub errors: Vec<FieldError>,
    /// Problems found but not listed.
    pub unlisted: usize,
}

impl Report {
    pub fn is_valid(&self) -> bool {
        self.errors.is_empty()
    }

    /// Every problem found, listed or not.
    pub fn total(&self) -> usize {
        self.errors.len() + self.unlisted
    }
}

/// Collects problems in time linear in their number: a set of pointers
/// already reported (the old list scan made 40k errors take seconds), and,
/// when capped, a set of schema locations already reported.
struct Collector {
    errors: Vec<FieldError>,
    pointers: HashSet<String>,
    locations: HashSet<String>,
    capped: bool,
    unlisted: usize,
}

impl Collector {
    fn new(capped: bool) -> Self {
        Collector {
            errors: Vec::new(),
            pointers: HashSet::new(),
            locations: HashSet::new(),
            capped,
            unlisted: 0,
        }
    }

    /// Lists a problem, or only counts it when the cap or its schema
    /// location's one report is used up. A pointer is reported once; the
    /// message is only worded for a problem that is listed.
    fn offer(&mut self, location: &str, pointer: String, message: impl FnOnce() -> String) {
        if self.pointers.contains(&pointer) {
            return;
        }
        if self.capped {
            if self.errors.len() >= MAX_LISTED || self.locations.contains(location) {
                self.unlisted += 1;
                return;
            }
            self.locations.insert(location.to_string());
        }
        self.pointers.insert(pointer.clone());
        self.errors.push(FieldError::new(pointer, message()));
    }
}

/// A form version ready to validate submissions against.
pub struct CompiledForm {
    pub meta: FormMeta,
    pub document: Arc<Value>,
    pub sha256: String,
    pub fields: Vec<Field>,
    validator: Validator,
    conditionals: Vec<Conditional>,
    /// Outer arrays before the arrays inside their items.
    array_limits: Vec<ArrayLimit>,
    /// The column layout of this version's stored cells (`forms::columns`).
    pub export_layout: std::sync::OnceLock<super::columns::Layout>,
}

impl std::fmt::Debug for CompiledForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledForm")
            .field("id", &self.meta.id)
            .field("version", &self.meta.version)
            .finish()
    }
}

fn steps_of(path: &str) -> Vec<Step> {
    let mut out = Vec::new();
    for segment in path.split('/') {
        match segment.strip_suffix("[]") {
            Some(key) => {
                out.push(Step::Key(key.to_string()));
                out.push(Step::EachItem);
            }
            None => out.push(Step::Key(segment.to_string())),
        }
    }
    out
}

fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

fn pointer_of(tokens: &[String]) -> String {
    tokens.iter().map(|t| format!("/{}", escape(t))).collect()
}

/// Receives the path of a value and the value.
type Visitor<'a> = dyn FnMut(&[String], &Value) + 'a;

/// Calls `visit` with every value in `data` that `steps` lead to, and its
/// path. The path is borrowed: nothing is copied unless the visitor keeps it.
fn each_value(data: &Value, steps: &[Step], path: &mut Vec<String>, visit: &mut Visitor<'_>) {
    let Some((first, rest)) = steps.split_first() else {
        visit(path, data);
        return;
    };
    match first {
        Step::Key(key) => {
            if let Some(next) = data.get(key) {
                path.push(key.clone());
                each_value(next, rest, path, visit);
                path.pop();
            }
        }
        Step::EachItem => {
            if let Some(items) = data.as_array() {
                for (i, item) in items.iter().enumerate() {
                    path.push(i.to_string());
                    each_value(item, rest, path, visit);
                    path.pop();
                }
            }
        }
    }
}

/// A field whose question does not apply to the data at hand.
struct Skipped<'a> {
    pointer: String,
    answered: bool,
    rule: &'a Conditional,
}

impl CompiledForm {
    /// Compiles a bundled, checked document. Errors name what is wrong.
    pub fn compile(document: Value) -> Result<CompiledForm, Vec<String>> {
        let meta = model::meta(&document).map_err(|e| vec![e])?;
        let fields = model::fields(&document);
        let mut problems = Vec::new();
        let mut conditionals = Vec::new();
        for field in &fields {
            let Some(rule) = &field.relevant else {
                continue;
            };
            match Predicate::<FieldRef>::parse(rule) {
                Ok(predicate) => {
                    let mut steps = steps_of(&field.path);
                    if field.kind == FieldKind::Repeat {
                        steps.pop(); // the repeat itself, not its items
                    }
                    let Some(Step::Key(key)) = steps.pop() else {
                        continue;
                    };
                    conditionals.push(Conditional {
                        parent: steps,
                        key,
                        condition: predicate.describe_for(&fields, field),
                        predicate,
                        schema_pointer: field.schema_pointer.clone(),
                    });
                }
                Err(why) => problems.push(format!("{}/x-relevant: {why}", field.schema_pointer)),
            }
        }
        let validator = jsonschema::options()
            .with_draft(Draft::Draft202012)
            .should_validate_formats(true)
            .with_format("email", is_email)
            .build(&document)
            .map_err(|e| vec![format!("the schema does not compile: {}", e.masked())])?;
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut array_limits = Vec::new();
        array_limits_of(&document, &mut Vec::new(), &mut array_limits);
        Ok(CompiledForm {
            meta,
            sha256: super::bundle::digest(&document),
            document: Arc::new(document),
            fields,
            validator,
            conditionals,
            array_limits,
            export_layout: std::sync::OnceLock::new(),
        })
    }

    /// Fields whose question does not apply to this data.
    fn not_relevant(&self, data: &Value) -> Vec<Skipped<'_>> {
        let mut out = Vec::new();
        let mut path = Vec::new();
        for rule in &self.conditionals {
            each_value(data, &rule.parent, &mut path, &mut |at, object| {
                let Value::Object(object) = object else {
                    return;
                };
                if !rule.predicate.eval(data, at) {
                    let mut pointer = pointer_of(at);
                    pointer.push('/');
                    pointer.push_str(&escape(&rule.key));
                    out.push(Skipped {
                        pointer,
                        answered: object.get(&rule.key).is_some_and(|v| !v.is_null()),
                        rule,
                    });
                }
            });
        }
        out
    }

    /// Every problem with `data`, each at its JSON pointer; empty when valid.
    /// For tools and fixtures; requests use [`CompiledForm::report`].
    pub fn validate(&self, data: &Value) -> Vec<FieldError> {
        self.problems(data, false).errors
    }

    /// What is wrong with `data`, capped for an answer to a request: arrays
    /// longer than their `maxItems` are refused before anything else looks
    /// at the data; then at most [`MAX_LISTED`] problems, one per schema
    /// location, and a count of the rest. Time is linear in the data.
    pub fn report(&self, data: &Value) -> Report {
        self.problems(data, true)
    }

    fn problems(&self, data: &Value, capped: bool) -> Report {
        if let Some(too_long) = self.too_long(data) {
            return Report {
                errors: vec![too_long],
                unlisted: 0,
            };
        }
        let skipped = self.not_relevant(data);
        let mut found = Collector::new(capped);
        for skip in skipped.iter().filter(|s| s.answered) {
            found.offer(&skip.rule.schema_pointer, skip.pointer.clone(), || {
                format!(
                    "does not apply here, so must be left empty: it applies only when {}",
                    skip.rule.condition
                )
            });
        }
        if !self.validator.is_valid(data) {
            let skipped: HashSet<&str> = skipped.iter().map(|s| s.pointer.as_str()).collect();
            // At or under a field that does not apply: already reported as
            // "must be left empty". One lookup per level of the pointer.
            let under_skipped = |pointer: &str| {
                !skipped.is_empty()
                    && (skipped.contains(pointer)
                        || pointer
                            .match_indices('/')
                            .any(|(i, _)| i > 0 && skipped.contains(&pointer[..i])))
            };
            for error in self.validator.iter_errors(data) {
                let at = error.instance_path().as_str();
                let location = error.schema_path().as_str();
                match error.kind() {
                    ValidationErrorKind::Required { property } => {
                        let name = property.as_str().unwrap_or_default();
                        let pointer = format!("{at}/{}", escape(name));
                        if !under_skipped(&pointer) {
                            found.offer(location, pointer, || "is required".into());
                        }
                    }
                    ValidationErrorKind::AdditionalProperties { unexpected } => {
                        for name in unexpected {
                            let pointer = format!("{at}/{}", escape(name));
                            if !under_skipped(&pointer) {
                                found.offer(location, pointer, || {
                                    "is not a field of this form".into()
                                });
                            }
                        }
                    }
                    kind => {
                        if under_skipped(at) {
                            continue;
                        }
                        let message = || match kind {
                            ValidationErrorKind::Format { format } => {
                                format!("is not a valid {format}")
                            }
                            ValidationErrorKind::OneOfNotValid { .. }
                            | ValidationErrorKind::Enum { .. }
                            | ValidationErrorKind::Constant { .. } => {
                                relevance::field_at(&self.fields, at)
                                    .and_then(relevance::allowed_values)
                                    .map(|a| format!("is not allowed here: must be {a}"))
                                    .unwrap_or_else(|| "is not one of the allowed values".into())
                            }
                            _ => error.masked().to_string(),
                        };
                        found.offer(location, at.to_string(), message);
                    }
                }
            }
        }
        Report {
            errors: found.errors,
            unlisted: found.unlisted,
        }
    }

    /// The first array with more items than its schema allows, found in
    /// one pass over the arrays: outer arrays are checked before the
    /// arrays in their items, so no oversized array is ever walked.
    fn too_long(&self, data: &Value) -> Option<FieldError> {
        let mut path = Vec::new();
        for limit in &self.array_limits {
            let mut found = None;
            each_value(
                data,
                &limit.steps,
                &mut path,
                &mut |at, value| match value {
                    Value::Array(items) if found.is_none() && items.len() > limit.max_items => {
                        found = Some(FieldError::new(
                            pointer_of(at),
                            format!(
                                "has {} items; this form takes at most {}",
                                items.len(),
                                limit.max_items
                            ),
                        ));
                    }
                    _ => {}
                },
            );
            if found.is_some() {
                return found;
            }
        }
        None
    }
}

/// The arrays of a bundled schema and their `maxItems`, outer first.
fn array_limits_of(schema: &Value, steps: &mut Vec<Step>, out: &mut Vec<ArrayLimit>) {
    let Value::Object(map) = schema else { return };
    let is_array = match map.get("type") {
        Some(Value::String(t)) => t == "array",
        Some(Value::Array(types)) => types.iter().any(|t| t == "array"),
        _ => false,
    };
    if is_array || map.contains_key("maxItems") {
        let max_items = map
            .get("maxItems")
            .and_then(Value::as_u64)
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(LEGACY_MAX_ITEMS);
        out.push(ArrayLimit {
            steps: steps.clone(),
            max_items,
        });
    }
    if let Some(properties) = map.get("properties").and_then(Value::as_object) {
        for (key, sub) in properties {
            steps.push(Step::Key(key.clone()));
            array_limits_of(sub, steps, out);
            steps.pop();
        }
    }
    if let Some(items) = map.get("items") {
        steps.push(Step::EachItem);
        array_limits_of(items, steps, out);
        steps.pop();
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        for sub in map.get(key).and_then(Value::as_array).into_iter().flatten() {
            array_limits_of(sub, steps, out);
        }
    }
}

/// The `email` format with the domain read case-insensitively (RFC 5321
/// §2.4): `a@example.XN--P1AI` is `a@example.xn--p1ai`, which the built-in
/// check accepts; the local part keeps its case.
fn is_email(text: &str) -> bool {
    static BUILT_IN: std::sync::OnceLock<Validator> = std::sync::OnceLock::new();
    let built_in = BUILT_IN.get_or_init(|| {
        jsonschema::options()
            .should_validate_formats(true)
            .build(&serde_json::json!({"format": "email"}))
            .expect("a one-keyword schema compiles")
    });
    let normalised = match text.rsplit_once('@') {
        Some((local, domain)) => format!("{local}@{}", domain.to_ascii_lowercase()),
        None => text.to_string(),
    };
    built_in.is_valid(&Value::String(normalised))
}

#[cfg(test)]
mod email_tests {
    #[test]
    fn email_domains_are_case_insensitive() {
        assert!(super::is_email("a@example.XN--P1AI"));
        assert!(super::is_email("a@example.xn--p1ai"));
        assert!(super::is_email("Case.Worker@Example.ORG"));
        assert!(!super::is_email("a@"));
        assert!(!super::is_email("not an address"));
    }
}
