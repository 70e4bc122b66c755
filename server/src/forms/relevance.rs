//! `x-relevant`: the small predicate language that says when a question
//! applies. Parsed once per form version, evaluated on every submission.
//! The same language, over case facts instead of fields, states the
//! programmes' workflow and deadline conditions (`programmes::FactRef`).

use std::cmp::Ordering;

use serde_json::Value;

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
}
