//! `x-relevant`: the small predicate language that says when a question
//! applies. Parsed once per form version, evaluated on every submission.
//! The same language, over case facts instead of fields, states the
//! programmes' workflow and deadline conditions (`programmes::FactRef`).

use std::cmp::Ordering;

use serde_json::Value;

use super::check::{tokens_of_path, tokens_of_pointer};
use super::model::{Choice, Field, FieldKind};

/// What a predicate compares: a field of the submission (`"field"`) or a
/// fact of the case (`"fact"`).
pub trait Reference: Sized {
    /// The key naming it in a predicate.
    const KEY: &'static str;
    fn parse(text: &str) -> Result<Self, String>;
}

#[derive(Debug, Clone, PartialEq)]
pub enum FieldRef {
    /// `/a/b`: from the root of the submission's data.
    Absolute(Vec<String>),
    /// `N/a/b`: up N levels from the object holding the field, then down.
    Relative { up: usize, rest: Vec<String> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    In,
    Contains,
    Lt,
    Lte,
    Gt,
    Gte,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Predicate<R = FieldRef> {
    Compare { field: R, op: Op, value: Value },
    Answered { field: R, want: bool },
    All(Vec<Predicate<R>>),
    Any(Vec<Predicate<R>>),
    Not(Box<Predicate<R>>),
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

fn tokens(pointer: &str) -> Vec<String> {
    if pointer.is_empty() {
        return Vec::new();
    }
    pointer.split('/').map(unescape).collect()
}

impl Reference for FieldRef {
    const KEY: &'static str = "field";

    fn parse(text: &str) -> Result<FieldRef, String> {
        if let Some(rest) = text.strip_prefix('/') {
            return Ok(FieldRef::Absolute(tokens(rest)));
        }
        let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
        if digits.is_empty() {
            return Err(format!(
                "{text:?} is neither an absolute JSON pointer (/a/b) nor a relative one (0/b)"
            ));
        }
        let rest = &text[digits.len()..];
        let rest = match rest {
            "" => Vec::new(),
            r if r.starts_with('/') => tokens(&r[1..]),
            _ => return Err(format!("{text:?}: expected '/' after the level count")),
        };
        Ok(FieldRef::Relative {
            up: digits
                .parse()
                .map_err(|_| format!("{text:?}: level count too large"))?,
            rest,
        })
    }
}

impl FieldRef {
    /// The tokens of the pointed-at location, given the tokens of the object
    /// holding the field that carries the predicate.
    pub fn resolve(&self, base: &[String]) -> Option<Vec<String>> {
        match self {
            FieldRef::Absolute(t) => Some(t.clone()),
            FieldRef::Relative { up, rest } => {
                let keep = base.len().checked_sub(*up)?;
                let mut out = base[..keep].to_vec();
                out.extend(rest.iter().cloned());
                Some(out)
            }
        }
    }
}

fn lookup<'a>(data: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut node = data;
    for token in path {
        node = match node {
            Value::Object(map) => map.get(token)?,
            Value::Array(items) => items.get(token.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(node)
}

fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

impl<R: Reference> Predicate<R> {
    pub fn parse(v: &Value) -> Result<Predicate<R>, String> {
        let map = v.as_object().ok_or("a predicate must be an object")?;
        let list = |key: &str| -> Result<Vec<Predicate<R>>, String> {
            let items = map[key]
                .as_array()
                .filter(|a| !a.is_empty())
                .ok_or_else(|| format!("\"{key}\" takes a non-empty list of predicates"))?;
            items.iter().map(Predicate::<R>::parse).collect()
        };
        if map.contains_key("all") {
            return Ok(Predicate::All(list("all")?));
        }
        if map.contains_key("any") {
            return Ok(Predicate::Any(list("any")?));
        }
        if let Some(inner) = map.get("not") {
            return Ok(Predicate::Not(Box::new(Predicate::<R>::parse(inner)?)));
        }
        let field = map
            .get(R::KEY)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("a predicate needs \"{}\" (or all / any / not)", R::KEY))?;
        let field = R::parse(field)?;
        const OPS: [(&str, Op); 8] = [
            ("eq", Op::Eq),
            ("ne", Op::Ne),
            ("in", Op::In),
            ("contains", Op::Contains),
            ("lt", Op::Lt),
            ("lte", Op::Lte),
            ("gt", Op::Gt),
            ("gte", Op::Gte),
        ];
        let mut found = OPS
            .iter()
            .filter(|(name, _)| map.contains_key(*name))
            .collect::<Vec<_>>();
        if let Some(want) = map.get("answered") {
            if !found.is_empty() {
                return Err("a predicate takes exactly one operator".into());
            }
            let want = want.as_bool().ok_or("\"answered\" takes true or false")?;
            return Ok(Predicate::Answered { field, want });
        }
        let (name, op) = match found.len() {
            1 => found.remove(0),
            0 => return Err(
                "a predicate needs an operator: eq, ne, in, contains, lt, lte, gt, gte or answered"
                    .into(),
            ),
            _ => return Err("a predicate takes exactly one operator".into()),
        };
        let value = map[*name].clone();
        if *op == Op::In && !value.is_array() {
            return Err("\"in\" takes a list of values".into());
        }
        let extra = map.keys().find(|k| *k != R::KEY && *k != name);
        if let Some(extra) = extra {
            return Err(format!("unexpected key {extra:?} in a predicate"));
        }
        Ok(Predicate::Compare {
            field,
            op: *op,
            value,
        })
    }

    /// Every reference in the predicate.
    pub fn refs(&self) -> Vec<&R> {
        match self {
            Predicate::Compare { field, .. } | Predicate::Answered { field, .. } => vec![field],
            Predicate::All(list) | Predicate::Any(list) => {
                list.iter().flat_map(Predicate::refs).collect()
            }
            Predicate::Not(inner) => inner.refs(),
        }
    }

    /// Evaluates with `lookup` giving the value a reference points at.
    pub fn test<'a>(&self, lookup: &dyn Fn(&R) -> Option<&'a Value>) -> bool {
        match self {
            Predicate::All(list) => list.iter().all(|p| p.test(lookup)),
            Predicate::Any(list) => list.iter().any(|p| p.test(lookup)),
            Predicate::Not(inner) => !inner.test(lookup),
            Predicate::Answered { field, want } => {
                lookup(field).is_some_and(|v| !v.is_null()) == *want
            }
            Predicate::Compare { field, op, value } => {
                let Some(actual) = lookup(field).filter(|v| !v.is_null()) else {
                    return *op == Op::Ne;
                };
                match op {
                    Op::Eq => actual == value,
                    Op::Ne => actual != value,
                    Op::In => value.as_array().is_some_and(|list| list.contains(actual)),
                    Op::Contains => actual.as_array().is_some_and(|list| list.contains(value)),
                    Op::Lt => compare(actual, value) == Some(Ordering::Less),
                    Op::Lte => matches!(
                        compare(actual, value),
                        Some(Ordering::Less | Ordering::Equal)
                    ),
                    Op::Gt => compare(actual, value) == Some(Ordering::Greater),
                    Op::Gte => matches!(
                        compare(actual, value),
                        Some(Ordering::Greater | Ordering::Equal)
                    ),
                }
            }
        }
    }
}

impl Predicate<FieldRef> {
    /// Evaluates against the submission's `data`; `base` is the path of the
    /// object that holds the field carrying the predicate.
    pub fn eval(&self, data: &Value, base: &[String]) -> bool {
        self.test(&|field: &FieldRef| field.resolve(base).and_then(|p| lookup(data, &p)))
    }
}

/// A referenced field in words: its label and the labels of its values.
#[derive(Debug, Clone, Default)]
pub struct Named {
    pub label: String,
    /// (value, label) for a choice field; empty otherwise.
    pub options: Vec<(Value, String)>,
}

impl Named {
    pub fn of(field: &Field) -> Named {
        Named {
            label: label_of(field),
            options: field
                .options
                .iter()
                .map(|c| (c.value.clone(), choice_label(c)))
                .collect(),
        }
    }

    /// A value as a person reads it: an option's label, yes/no, a quoted text.
    pub fn value(&self, value: &Value) -> String {
        if let Some((_, label)) = self.options.iter().find(|(v, _)| v == value) {
            return format!("\"{label}\"");
        }
        match value {
            Value::Bool(true) => "yes".into(),
            Value::Bool(false) => "no".into(),
            Value::String(s) => format!("\"{s}\""),
            Value::Array(items) => or_list(items.iter().map(|v| self.value(v)).collect()),
            other => other.to_string(),
        }
    }
}

/// "a", "a or b", "a, b or c".
fn or_list(mut items: Vec<String>) -> String {
    match items.len() {
        0 => String::new(),
        1 => items.remove(0),
        _ => {
            let last = items.pop().unwrap_or_default();
            format!("{} or {last}", items.join(", "))
        }
    }
}

/// The label a person sees: the field's title without the paper form's
/// trailing colon, or its key when it has none.
pub fn label_of(field: &Field) -> String {
    field
        .title
        .as_deref()
        .map(|t| t.trim().trim_end_matches(':').trim())
        .filter(|t| !t.is_empty())
        .unwrap_or(&field.key)
        .to_string()
}

fn choice_label(choice: &Choice) -> String {
    match (&choice.title, &choice.value) {
        (Some(title), _) => title.clone(),
        (None, Value::String(s)) => s.clone(),
        (None, other) => other.to_string(),
    }
}

/// What a field accepts, in words: "one of "Female", "Male"" for a choice.
pub fn allowed_values(field: &Field) -> Option<String> {
    if field.options.is_empty() {
        return None;
    }
    let labels: Vec<String> = field
        .options
        .iter()
        .map(|c| format!("\"{}\"", choice_label(c)))
        .collect();
    let many = if field.kind == FieldKind::SelectMultiple {
        "any of"
    } else {
        "one of"
    };
    Some(format!("{many} {}", labels.join(", ")))
}

/// The field a data pointer (`/child/siblings/0/name`) is an answer to.
pub fn field_at<'a>(fields: &'a [Field], pointer: &str) -> Option<&'a Field> {
    let mut tokens = tokens_of_pointer(pointer.trim_start_matches('/'));
    // A select-multiple's item (`/langs/1`) is an answer to the field itself.
    loop {
        if let Some(field) = fields.iter().find(|f| {
            // A repeat group itself is `group[]`; its pointer is `/group`.
            let path = f.path.strip_suffix("[]").unwrap_or(&f.path);
            tokens_of_path(path) == tokens
        }) {
            return Some(field);
        }
        if tokens.last().map(String::as_str) != Some("[]") {
            return None;
        }
        tokens.pop();
    }
}

impl<R: Clone> Predicate<R> {
    /// The predicate in words, each reference named by `name`:
    /// `"Referrer category" is "Professional"`.
    pub fn describe(&self, name: &dyn Fn(&R) -> Named) -> String {
        let part = |p: &Predicate<R>| match p {
            Predicate::All(_) | Predicate::Any(_) => format!("({})", p.describe(name)),
            _ => p.describe(name),
        };
        match self {
            Predicate::All(list) => list.iter().map(part).collect::<Vec<_>>().join(" and "),
            Predicate::Any(list) => list.iter().map(part).collect::<Vec<_>>().join(" or "),
            Predicate::Not(inner) => match inner.as_ref() {
                Predicate::Answered { field, want } => Predicate::Answered {
                    field: field.clone(),
                    want: !want,
                }
                .describe(name),
                _ => format!("not {}", part(inner)),
            },
            Predicate::Answered { field, want } => {
                let named = name(field);
                let verb = if *want {
                    "is answered"
                } else {
                    "is not answered"
                };
                format!("\"{}\" {verb}", named.label)
            }
            Predicate::Compare { field, op, value } => {
                let named = name(field);
                let shown = named.value(value);
                let dates = value.is_string();
                let verb = match op {
                    Op::Eq => "is",
                    Op::Ne => "is not",
                    Op::In => "is one of",
                    Op::Contains => "includes",
                    Op::Lt if dates => "is before",
                    Op::Lte if dates => "is on or before",
                    Op::Gt if dates => "is after",
                    Op::Gte if dates => "is on or after",
                    Op::Lt => "is less than",
                    Op::Lte => "is at most",
                    Op::Gt => "is more than",
                    Op::Gte => "is at least",
                };
                format!("\"{}\" {verb} {shown}", named.label)
            }
        }
    }
}

impl Predicate<FieldRef> {
    /// In words, for the `x-relevant` of `holder`, a field of `fields`: each
    /// reference named by the label of the field it points at.
    pub fn describe_for(&self, fields: &[Field], holder: &Field) -> String {
        // The object holding the field: for a repeat group, the object
        // holding the group, not its items.
        let mut base = tokens_of_path(&holder.path);
        base.pop();
        if holder.kind == FieldKind::Repeat {
            base.pop();
        }
        self.describe(&|reference: &FieldRef| {
            // An index in an absolute reference stands for any item.
            let target = reference.resolve(&base).map(|t| {
                t.iter()
                    .map(|s| match s.parse::<usize>() {
                        Ok(_) => "[]".to_string(),
                        Err(_) => s.clone(),
                    })
                    .collect::<Vec<_>>()
            });
            target
                .and_then(|t| fields.iter().find(|f| tokens_of_path(&f.path) == t))
                .map(Named::of)
                .unwrap_or_else(|| Named {
                    label: "another answer".into(),
                    options: Vec::new(),
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(v: Value) -> Predicate {
        Predicate::parse(&v).unwrap()
    }

    #[test]
    fn relative_and_absolute_references() {
        let data =
            json!({"a": {"flag": true, "items": [{"kind": "other"}, {"kind": "x"}]}, "age": 16});
        let base = vec!["a".to_string(), "items".to_string(), "0".to_string()];
        assert!(p(json!({"field": "0/kind", "eq": "other"})).eval(&data, &base));
        assert!(p(json!({"field": "2/flag", "eq": true})).eval(&data, &base));
        assert!(p(json!({"field": "/age", "gte": 16})).eval(&data, &base));
        assert!(!p(json!({"field": "/age", "lt": 16})).eval(&data, &base));
        let other = vec!["a".to_string(), "items".to_string(), "1".to_string()];
        assert!(!p(json!({"field": "0/kind", "eq": "other"})).eval(&data, &other));
    }

    #[test]
    fn operators_and_absent_fields() {
        let data = json!({"langs": ["kk", "other"], "d": "2026-01-05", "n": null});
        let root: Vec<String> = Vec::new();
        assert!(p(json!({"field": "/langs", "contains": "other"})).eval(&data, &root));
        assert!(p(json!({"field": "/d", "in": ["2026-01-05"]})).eval(&data, &root));
        assert!(p(json!({"field": "/d", "lt": "2026-02-01"})).eval(&data, &root));
        assert!(!p(json!({"field": "/missing", "eq": 1})).eval(&data, &root));
        assert!(p(json!({"field": "/missing", "ne": 1})).eval(&data, &root));
        assert!(p(json!({"field": "/n", "answered": false})).eval(&data, &root));
        assert!(p(json!({"all": [{"field": "/d", "answered": true}, {"not": {"field": "/langs", "contains": "ru"}}]}))
            .eval(&data, &root));
        assert!(p(
            json!({"any": [{"field": "/x", "eq": 1}, {"field": "/d", "gte": "2026-01-05"}]})
        )
        .eval(&data, &root));
    }

    #[test]
    fn malformed_predicates_are_refused() {
        for bad in [
            json!({"field": "a/b", "eq": 1}),
            json!({"field": "/a"}),
            json!({"field": "/a", "eq": 1, "ne": 2}),
            json!({"field": "/a", "in": 3}),
            json!({"all": []}),
            json!({"field": "/a", "eq": 1, "extra": 2}),
        ] {
            assert!(Predicate::<FieldRef>::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn predicates_read_in_words_with_labels() {
        let form = json!({"properties": {"referrer": {"type": "object", "properties": {
            "category": {"title": "Referrer category:", "type": "string",
                "oneOf": [{"const": "public", "title": "Member of the public"},
                          {"const": "professional", "title": "Professional"}]},
            "age": {"type": "integer"},
            "title": {"type": "string", "title": "Professional title",
                "x-relevant": {"any": [{"field": "0/category", "eq": "professional"},
                                       {"all": [{"field": "/referrer/age", "gte": 18},
                                                {"not": {"field": "0/category", "answered": true}}]}]}}
        }}}});
        let fields = crate::forms::model::fields(&form);
        let holder = fields.iter().find(|f| f.key == "title").unwrap();
        let rule = p(holder.relevant.clone().unwrap());
        assert_eq!(
            rule.describe_for(&fields, holder),
            "\"Referrer category\" is \"Professional\" or (\"age\" is at least 18 and \"Referrer category\" is not answered)"
        );
        let category = fields.iter().find(|f| f.key == "category").unwrap();
        assert_eq!(
            allowed_values(category).unwrap(),
            "one of \"Member of the public\", \"Professional\""
        );
        assert_eq!(
            field_at(&fields, "/referrer/category").unwrap().key,
            "category"
        );
    }
}
