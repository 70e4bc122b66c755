//! A published form version compiled for validation: the JSON Schema
//! validator plus the `x-relevant` rules, built once and reused.

use std::sync::Arc;

use jsonschema::error::ValidationErrorKind;
use jsonschema::{Draft, Validator};
use serde_json::Value;

use super::model::{self, Field, FieldKind, FormMeta};
use super::relevance::Predicate;
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

/// Every object in `data` that `steps` lead to, with its path.
fn objects_at<'a>(
    data: &'a Value,
    steps: &[Step],
    prefix: &mut Vec<String>,
    out: &mut Vec<(Vec<String>, &'a Value)>,
) {
    let Some((first, rest)) = steps.split_first() else {
        if data.is_object() {
            out.push((prefix.clone(), data));
        }
        return;
    };
    match first {
        Step::Key(key) => {
            if let Some(next) = data.get(key) {
                prefix.push(key.clone());
                objects_at(next, rest, prefix, out);
                prefix.pop();
            }
        }
        Step::EachItem => {
            if let Some(items) = data.as_array() {
                for (i, item) in items.iter().enumerate() {
                    prefix.push(i.to_string());
                    objects_at(item, rest, prefix, out);
                    prefix.pop();
                }
            }
        }
    }
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
            match Predicate::parse(rule) {
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
                        predicate,
                        condition: rule.to_string(),
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
        })
    }

    /// Pointers of fields whose question does not apply to this data.
    fn not_relevant(&self, data: &Value) -> Vec<(String, &Conditional)> {
        let mut out = Vec::new();
        let mut parents = Vec::new();
        for rule in &self.conditionals {
            parents.clear();
            objects_at(data, &rule.parent, &mut Vec::new(), &mut parents);
            for (path, _) in &parents {
                if !rule.predicate.eval(data, path) {
                    let mut tokens = path.clone();
                    tokens.push(rule.key.clone());
                    out.push((pointer_of(&tokens), rule));
                }
            }
        }
        out
    }

    /// Every problem with `data`, each at its JSON pointer; empty when valid.
    pub fn validate(&self, data: &Value) -> Vec<FieldError> {
        let skipped = self.not_relevant(data);
        let mut errors = Vec::new();
        for (pointer, rule) in &skipped {
            if data.pointer(pointer).is_some_and(|v| !v.is_null()) {
                errors.push(FieldError::new(
                    pointer.clone(),
                    format!(
                        "does not apply here, so must be left empty (applies when {})",
                        rule.condition
                    ),
                ));
            }
        }
        if self.validator.is_valid(data) {
            return errors;
        }
        let under_skipped = |pointer: &str| {
            skipped.iter().any(|(s, _)| {
                pointer == s
                    || (pointer.starts_with(s.as_str()) && pointer[s.len()..].starts_with('/'))
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
                    vec![(at, "is not one of the allowed values".to_string())]
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
