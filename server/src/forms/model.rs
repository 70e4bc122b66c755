//! The form model: what a bundled schema says in casesync's terms — the
//! form's metadata and its fields in form order, with their kind, options,
//! relevance, privacy class and the fact they set.

use serde::Serialize;
use serde_json::Value;

/// `x-form`: what the form is and what it does to a case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FormMeta {
    pub id: String,
    pub programme: String,
    pub version: String,
    pub title: String,
    pub source: String,
    pub case: CaseRole,
    pub event: String,
    pub occurred_at: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CaseRole {
    Opens,
    Updates,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldKind {
    Section,
    Repeat,
    Text,
    Date,
    DateTime,
    Integer,
    Number,
    Boolean,
    SelectOne,
    SelectMultiple,
    List,
    Attachment,
    Object,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Pii {
    Direct,
    Quasi,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Choice {
    pub value: Value,
    pub title: Option<String>,
}

/// One field of a form. `path` names it the way exports and diffs do:
/// `section/field`, repeat items as `group[]/field`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Field {
    pub path: String,
    pub key: String,
    pub kind: FieldKind,
    pub title: Option<String>,
    pub options: Vec<Choice>,
    /// Accepts the constant "unknown" besides its own type.
    pub accepts_unknown: bool,
    /// Listed in its parent's `required` (required when relevant).
    pub required: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relevant: Option<Value>,
    pub pii: Option<Pii>,
    pub sensitive: bool,
    pub fact: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attachment: Option<Value>,
    pub professional_discussion: bool,
    /// `x-case-number`: the field holds the case's number as the server
    /// gave it, never a worker's answer (filled and checked by `ingest`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub case_number: bool,
    /// Where the field's schema sits in the bundled document.
    pub schema_pointer: String,
}

impl Field {
    /// Path segments; a repeat group is a segment ending in `[]`.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.path.split('/')
    }

    /// Every value this field has in `data` with its JSON pointer: one at
    /// most, or one per item of each repeat group on the way.
    pub fn values_in<'a>(&self, data: &'a Value) -> Vec<(String, &'a Value)> {
        fn walk<'a>(
            value: &'a Value,
            segments: &[&str],
            pointer: String,
            found: &mut Vec<(String, &'a Value)>,
        ) {
            let Some((first, rest)) = segments.split_first() else {
                if !value.is_null() {
                    found.push((pointer, value));
                }
                return;
            };
            let (key, repeat) = match first.strip_suffix("[]") {
                Some(key) => (key, true),
                None => (*first, false),
            };
            let Some(child) = value.get(key) else { return };
            let pointer = format!("{pointer}/{}", key.replace('~', "~0").replace('/', "~1"));
            match (repeat, child) {
                (true, Value::Array(items)) => {
                    for (i, item) in items.iter().enumerate() {
                        walk(item, rest, format!("{pointer}/{i}"), found);
                    }
                }
                (true, _) => {}
                (false, child) => walk(child, rest, pointer, found),
            }
        }
        let segments: Vec<&str> = self.segments().collect();
        let mut found = Vec::new();
        walk(data, &segments, String::new(), &mut found);
        found
    }
}

pub fn meta(bundled: &Value) -> Result<FormMeta, String> {
    let x = bundled
        .get("x-form")
        .and_then(Value::as_object)
        .ok_or("the root needs an \"x-form\" object")?;
    let text = |key: &str| -> Result<String, String> {
        x.get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .map(str::to_string)
            .ok_or_else(|| format!("x-form.{key} must be a non-empty string"))
    };
    let case = match text("case")?.as_str() {
        "opens" => CaseRole::Opens,
        "updates" => CaseRole::Updates,
        "none" => CaseRole::None,
        other => {
            return Err(format!(
                "x-form.case must be opens, updates or none, not {other:?}"
            ))
        }
    };
    Ok(FormMeta {
        id: text("id")?,
        programme: text("programme")?,
        version: text("version")?,
        title: bundled
            .get("title")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        source: text("source")?,
        case,
        event: text("event")?,
        occurred_at: text("occurred_at")?,
    })
}

fn options_of(schema: &Value) -> Option<Vec<Choice>> {
    let list = schema
        .get("oneOf")
        .or_else(|| schema.get("anyOf"))?
        .as_array()?;
    let mut out = Vec::with_capacity(list.len());
    for option in list {
        let value = option.get("const")?;
        out.push(Choice {
            value: value.clone(),
            title: option
                .get("title")
                .and_then(Value::as_str)
                .map(str::to_string),
        });
    }
    Some(out)
}

fn is_unknown_const(schema: &Value) -> bool {
    schema.get("const").and_then(Value::as_str) == Some("unknown")
}

/// The schema to classify: for `anyOf: [T, "unknown"]`, T.
fn underlying(schema: &Value) -> (&Value, bool) {
    if let Some(any) = schema.get("anyOf").and_then(Value::as_array) {
        if any.len() == 2 && any.iter().any(is_unknown_const) && options_of(schema).is_none() {
            let inner = any.iter().find(|s| !is_unknown_const(s)).unwrap_or(schema);
            return (inner, true);
        }
    }
    (schema, false)
}

fn kind_of(schema: &Value) -> FieldKind {
    let ty = schema.get("type").and_then(Value::as_str);
    if schema.get("x-attachment").is_some() {
        return FieldKind::Attachment;
    }
    if options_of(schema).is_some() {
        return FieldKind::SelectOne;
    }
    match ty {
        Some("object") => FieldKind::Object,
        Some("array") => {
            let items = schema.get("items").unwrap_or(&Value::Null);
            if items.get("properties").is_some() {
                FieldKind::Repeat
            } else if options_of(items).is_some() {
                FieldKind::SelectMultiple
            } else {
                FieldKind::List
            }
        }
        Some("boolean") => FieldKind::Boolean,
        Some("integer") => FieldKind::Integer,
        Some("number") => FieldKind::Number,
        _ => match schema.get("format").and_then(Value::as_str) {
            Some("date") => FieldKind::Date,
            Some("date-time") => FieldKind::DateTime,
            _ => FieldKind::Text,
        },
    }
}

/// Every field of a bundled form, in form order, sections and repeat groups
/// before their children.
pub fn fields(bundled: &Value) -> Vec<Field> {
    let mut out = Vec::new();
    walk_object(bundled, "", "", &mut out);
    out
}

fn walk_object(schema: &Value, path: &str, schema_at: &str, out: &mut Vec<Field>) {
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (key, prop) in props {
        let field_path = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}/{key}")
        };
        let pointer = format!(
            "{schema_at}/properties/{}",
            key.replace('~', "~0").replace('/', "~1")
        );
        let (inner, accepts_unknown) = underlying(prop);
        let mut kind = kind_of(inner);
        if kind == FieldKind::Object
            && (prop.get("x-section").is_some() || inner.get("properties").is_some())
            && prop.get("x-attachment").is_none()
        {
            kind = if prop.get("x-section").is_some() {
                FieldKind::Section
            } else {
                FieldKind::Object
            };
        }
        let options = match kind {
            FieldKind::SelectOne => options_of(inner).unwrap_or_default(),
            FieldKind::SelectMultiple => {
                inner.get("items").and_then(options_of).unwrap_or_default()
            }
            _ => Vec::new(),
        };
        let pii = match prop.get("x-pii").and_then(Value::as_str) {
            Some("direct") => Some(Pii::Direct),
            Some("quasi") => Some(Pii::Quasi),
            _ => None,
        };
        let path_name = if kind == FieldKind::Repeat {
            format!("{field_path}[]")
        } else {
            field_path.clone()
        };
        out.push(Field {
            path: path_name.clone(),
            key: key.clone(),
            kind,
            title: prop
                .get("title")
                .and_then(Value::as_str)
                .map(str::to_string),
            options,
            accepts_unknown,
            required: required.contains(&key.as_str()),
            relevant: prop.get("x-relevant").cloned(),
            pii,
            sensitive: prop
                .get("x-sensitive")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            fact: prop
                .get("x-fact")
                .and_then(Value::as_str)
                .map(str::to_string),
            attachment: prop.get("x-attachment").cloned(),
            professional_discussion: prop
                .get("x-professional-discussion")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            case_number: prop.get("x-case-number") == Some(&Value::Bool(true)),
            schema_pointer: pointer.clone(),
        });
        match kind {
            FieldKind::Section | FieldKind::Object => walk_object(inner, &path_name, &pointer, out),
            FieldKind::Repeat => walk_object(
                &inner["items"],
                &path_name,
                &format!("{pointer}/items"),
                out,
            ),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_come_in_form_order_with_their_kinds() {
        let form = json!({
            "properties": {
                "child": {
                    "type": "object", "x-section": {"code": "B"}, "required": ["sex", "siblings"],
                    "properties": {
                        "sex": {"type": "string", "x-fact": "child.sex",
                                "oneOf": [{"const": "female"}, {"const": "male"}]},
                        "dob": {"anyOf": [{"type": "string", "format": "date"}, {"const": "unknown"}], "x-pii": "quasi"},
                        "siblings": {"type": "array", "x-relevant": {"field": "0/has", "eq": true},
                                     "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
                        "langs": {"type": "array", "items": {"type": "string", "oneOf": [{"const": "kk"}]}}
                    }
                }
            }
        });
        let f = fields(&form);
        let paths: Vec<&str> = f.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "child",
                "child/sex",
                "child/dob",
                "child/siblings[]",
                "child/siblings[]/name",
                "child/langs"
            ]
        );
        assert_eq!(f[0].kind, FieldKind::Section);
        assert_eq!(f[1].kind, FieldKind::SelectOne);
        assert!(f[1].required);
        assert_eq!(f[1].fact.as_deref(), Some("child.sex"));
        assert_eq!(f[2].kind, FieldKind::Date);
        assert!(f[2].accepts_unknown);
        assert_eq!(f[2].pii, Some(Pii::Quasi));
        assert_eq!(f[3].kind, FieldKind::Repeat);
        assert!(f[3].relevant.is_some());
        assert_eq!(f[5].kind, FieldKind::SelectMultiple);
        assert_eq!(f[5].options.len(), 1);

        let data =
            json!({"child": {"sex": "male", "siblings": [{"name": "A"}, {}, {"name": "B"}]}});
        let names: Vec<(String, &Value)> = f[4].values_in(&data);
        assert_eq!(
            names,
            [
                ("/child/siblings/0/name".to_string(), &json!("A")),
                ("/child/siblings/2/name".to_string(), &json!("B"))
            ]
        );
        assert_eq!(
            f[1].values_in(&data),
            [("/child/sex".to_string(), &json!("male"))]
        );
        assert!(f[2].values_in(&data).is_empty());
    }
}
