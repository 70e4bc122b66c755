//! A published form version compiled for validation: the JSON Schema
//! validator plus the `x-relevant` rules, built once and reused.

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
}

/// A form version ready to validate submissions against.
pub struct CompiledForm {
    pub meta: FormMeta,
    pub document: Arc<Value>,
    pub sha256: String,
    pub fields: Vec<Field>,
    validator: Validator,
    conditionals: Vec<Conditional>,
    /// The export cells stored for each submission (`exports::stored`).
    pub export_layout: std::sync::OnceLock<crate::exports::stored::Layout>,
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

/// Receives the path of an object and the object.
type ObjectVisitor<'a> = dyn FnMut(&[String], &serde_json::Map<String, Value>) + 'a;

/// Calls `visit` with every object in `data` that `steps` lead to, and its
/// path. The path is borrowed: nothing is copied unless the visitor keeps it.
fn each_object(
    data: &Value,
    steps: &[Step],
    path: &mut Vec<String>,
    visit: &mut ObjectVisitor<'_>,
) {
    let Some((first, rest)) = steps.split_first() else {
        if let Value::Object(map) = data {
            visit(path, map);
        }
        return;
    };
    match first {
        Step::Key(key) => {
            if let Some(next) = data.get(key) {
                path.push(key.clone());
                each_object(next, rest, path, visit);
                path.pop();
            }
        }
        Step::EachItem => {
            if let Some(items) = data.as_array() {
                for (i, item) in items.iter().enumerate() {
                    path.push(i.to_string());
                    each_object(item, rest, path, visit);
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
                    });
                }
                Err(why) => problems.push(format!("{}/x-relevant: {why}", field.schema_pointer)),
            }
        }
        let validator = jsonschema::options()
            .with_draft(Draft::Draft202012)
            .should_validate_formats(true)
            .build(&document)
            .map_err(|e| vec![format!("the schema does not compile: {}", e.masked())])?;
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(CompiledForm {
            meta,
            sha256: super::bundle::digest(&document),
            document: Arc::new(document),
            fields,
            validator,
            conditionals,
            export_layout: std::sync::OnceLock::new(),
        })
    }

    /// Fields whose question does not apply to this data.
    fn not_relevant(&self, data: &Value) -> Vec<Skipped<'_>> {
        let mut out = Vec::new();
        let mut path = Vec::new();
        for rule in &self.conditionals {
            each_object(data, &rule.parent, &mut path, &mut |at, object| {
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
    pub fn validate(&self, data: &Value) -> Vec<FieldError> {
        let skipped = self.not_relevant(data);
        let mut errors = Vec::new();
        for skip in skipped.iter().filter(|s| s.answered) {
            errors.push(FieldError::new(
                skip.pointer.clone(),
                format!(
                    "does not apply here, so must be left empty: it applies only when {}",
                    skip.rule.condition
                ),
            ));
        }
        if self.validator.is_valid(data) {
            return errors;
        }
        let under_skipped = |pointer: &str| {
            skipped.iter().any(|s| {
                let s = s.pointer.as_str();
                pointer == s || (pointer.starts_with(s) && pointer[s.len()..].starts_with('/'))
            })
        };
        for error in self.validator.iter_errors(data) {
            let at = error.instance_path().as_str().to_string();
            let found: Vec<(String, String)> = match error.kind() {
                ValidationErrorKind::Required { property } => {
                    let name = property.as_str().unwrap_or_default();
                    vec![(format!("{at}/{}", escape(name)), "is required".to_string())]
                }
                ValidationErrorKind::AdditionalProperties { unexpected } => unexpected
                    .iter()
                    .map(|name| {
                        (
                            format!("{at}/{}", escape(name)),
                            "is not a field of this form".to_string(),
                        )
                    })
                    .collect(),
                ValidationErrorKind::Format { format } => {
                    vec![(at, format!("is not a valid {format}"))]
                }
                ValidationErrorKind::OneOfNotValid { .. }
                | ValidationErrorKind::Enum { .. }
                | ValidationErrorKind::Constant { .. } => {
                    let allowed = relevance::field_at(&self.fields, &at)
                        .and_then(relevance::allowed_values)
                        .map(|a| format!("is not allowed here: must be {a}"));
                    vec![(
                        at,
                        allowed.unwrap_or("is not one of the allowed values".into()),
                    )]
                }
                _ => vec![(at, error.masked().to_string())],
            };
            for (pointer, message) in found {
                if !under_skipped(&pointer)
                    && !errors.iter().any(|e: &FieldError| e.pointer == pointer)
                {
                    errors.push(FieldError::new(pointer, message));
                }
            }
        }
        errors
    }
}
