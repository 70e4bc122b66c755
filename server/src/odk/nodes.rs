//! The one mapping between a bundled JSON-Schema form version and its
//! XForm: a tree of nodes, each naming its XML element, the JSON it stands
//! for and how it is asked on the phone. `xform` writes the form from it and
//! `instance` reads a filled instance back with it, so the path rules exist
//! once. Anything the tree cannot express is refused here, with the schema
//! location and the reason (docs/odk.md, "How each part of a form maps").

use serde_json::Value;

use crate::forms::model::{self, FormMeta};
use crate::forms::relevance::{FieldRef, Predicate};

/// Suffix of the known/unknown question of an "or unknown" field.
pub const KNOWN_SUFFIX: &str = "__known";
/// Suffix of the "is there one?" question of an optional section whose
/// questions are required when it is there.
pub const PRESENT_SUFFIX: &str = "__present";
/// Suffix of the hidden count of a repeat with `minItems`/`maxItems`.
pub const COUNT_SUFFIX: &str = "__count";
/// The single question of each item of a list of plain values.
pub const LIST_VALUE: &str = "value";
/// Choice list of yes/no questions (booleans) and of "present?" toggles.
pub const YES_NO_LIST: &str = "yes_no";
/// Choice list of the known/unknown questions.
pub const KNOWN_LIST: &str = "known_unknown";

/// JSON-Schema keywords that constrain a value. One the mapping does not
/// translate is refused, never dropped: a dropped one would make the phone's
/// form weaker than the server's. Words outside this list are annotations.
const ASSERTIONS: [&str; 33] = [
    "type",
    "enum",
    "const",
    "multipleOf",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "maxItems",
    "minItems",
    "uniqueItems",
    "maxContains",
    "minContains",
    "maxProperties",
    "minProperties",
    "required",
    "dependentRequired",
    "format",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "if",
    "then",
    "else",
    "dependentSchemas",
    "prefixItems",
    "items",
    "contains",
    "properties",
];
const MORE_ASSERTIONS: [&str; 5] = [
    "patternProperties",
    "additionalProperties",
    "propertyNames",
    "unevaluatedItems",
    "unevaluatedProperties",
];

/// One choice list, written once as a secondary instance.
#[derive(Debug, Clone, PartialEq)]
pub struct ChoiceList {
    pub id: String,
    /// (value, label)
    pub items: Vec<(String, String)>,
}

/// What a leaf question holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Leaf {
    Text,
    Date,
    DateTime,
    Integer,
    Decimal,
    /// A yes/no `select1` whose values are `true` / `false`.
    Boolean,
    /// `select1` over the named choice list.
    One(String),
    /// `select` over the named choice list; the value is space-separated.
    Many(String),
    /// `<upload>`; the value is the file name.
    Upload {
        mediatype: String,
    },
}

impl Leaf {
    /// The bind type of the question.
    pub fn bind_type(&self) -> &'static str {
        match self {
            Leaf::Date => "date",
            Leaf::DateTime => "dateTime",
            Leaf::Integer => "int",
            Leaf::Decimal => "decimal",
            Leaf::Upload { .. } => "binary",
            Leaf::Text | Leaf::Boolean | Leaf::One(_) | Leaf::Many(_) => "string",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// An object: a `<group>`. `toggle`: optional with required questions,
    /// asked through a "present?" question (PRESENT_SUFFIX) before it.
    Group { children: Vec<Node>, toggle: bool },
    /// An array of objects: `<group><repeat>`.
    Repeat {
        children: Vec<Node>,
        /// `minItems`, and at least 1 when the array is required.
        min: usize,
        max: Option<usize>,
    },
    /// An array of plain values: a repeat whose items hold one question
    /// (LIST_VALUE). Phone numbers hold spaces, so a space list won't do.
    List {
        value: Leaf,
        constraints: Vec<String>,
        /// `minItems`, and at least 1 when the array is required.
        min: usize,
        max: Option<usize>,
    },
    /// A question. `unknown`: an "or unknown" field (`anyOf` of a value and
    /// a constant), asked as a known / constant question (KNOWN_SUFFIX)
    /// before the typed one.
    Question {
        leaf: Leaf,
        /// XPath constraints on `.`, joined with `and`.
        constraints: Vec<String>,
        unknown: Option<OrConst>,
    },
    /// A value the phone does not ask (a reference to another record by
    /// uuid, `many`: a list of them): kept in the instance, empty until
    /// entities fill it.
    Hidden { many: bool },
}

/// The constant of an "or unknown" union and the choice list asking it.
#[derive(Debug, Clone, PartialEq)]
pub struct OrConst {
    pub list: String,
    /// The constant the JSON holds, usually "unknown".
    pub value: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The XML element, which is the JSON key.
    pub name: String,
    pub label: String,
    pub hint: Option<String>,
    /// `x-labels`: language → label.
    pub translations: Vec<(String, String)>,
    /// Where its schema sits in the bundled document.
    pub pointer: String,
    /// In its parent's `required`: required while relevant.
    pub required: bool,
    pub relevant: Option<Predicate>,
    pub kind: Kind,
}

/// The whole mapping of one form version.
#[derive(Debug, Clone, PartialEq)]
pub struct FormTable {
    pub meta: FormMeta,
    pub title: String,
    pub nodes: Vec<Node>,
    pub lists: Vec<ChoiceList>,
}

impl FormTable {
    /// Builds the mapping of a bundled form, or every reason it cannot be
    /// asked on a phone, each naming the form and the schema location.
    pub fn build(bundled: &Value) -> Result<FormTable, Vec<String>> {
        let meta = model::meta(bundled).map_err(|why| vec![format!("/x-form: {why}")])?;
        let mut b = Builder {
            lists: vec![ChoiceList {
                id: YES_NO_LIST.into(),
                items: vec![("true".into(), "Yes".into()), ("false".into(), "No".into())],
            }],
            problems: Vec::new(),
        };
        let nodes = b.object_children(bundled, "");
        if !b.problems.is_empty() {
            let form = &meta.id;
            return Err(b
                .problems
                .into_iter()
                .map(|p| format!("{form} {}: {p}", meta.version))
                .collect());
        }
        Ok(FormTable {
            title: if meta.title.is_empty() {
                meta.id.clone()
            } else {
                meta.title.clone()
            },
            meta,
            nodes,
            lists: b.lists,
        })
    }

    pub fn list(&self, id: &str) -> Option<&ChoiceList> {
        self.lists.iter().find(|l| l.id == id)
    }
}

struct Builder {
    lists: Vec<ChoiceList>,
    problems: Vec<String>,
}

fn escape_token(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// An XML element name we can use as is: ASCII letters, digits, `_`, `-`,
/// `.`, not starting with a digit, `-` or `.`, not `xml…`, and free of our
/// helper suffixes' `__`.
fn is_plain_name(key: &str) -> bool {
    let mut chars = key.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    (first.is_ascii_alphabetic() || first == '_')
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !key.to_ascii_lowercase().starts_with("xml")
        && !key.contains("__")
}

fn text(schema: &Value, key: &str) -> Option<String> {
    schema
        .get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// The other side of a union with a value: a text constant.
fn is_unknown_const(schema: &Value) -> bool {
    schema
        .get("const")
        .and_then(Value::as_str)
        .is_some_and(|c| c != "known" && !c.is_empty() && !c.chars().any(char::is_whitespace))
}

/// The choices of a choice field: `oneOf`/`anyOf` of `const` (+ `title`),
/// or an `enum` (its values are their own labels).
fn choices(schema: &Value) -> Option<Vec<(Value, Option<String>)>> {
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        return Some(values.iter().map(|v| (v.clone(), None)).collect());
    }
    let list = schema
        .get("oneOf")
        .or_else(|| schema.get("anyOf"))?
        .as_array()?;
    list.iter()
        .map(|o| Some((o.get("const")?.clone(), text(o, "title"))))
        .collect()
}

/// An XPath string literal; `None` when the text holds both quote kinds.
pub fn literal(text: &str) -> Option<String> {
    if !text.contains('\'') {
        Some(format!("'{text}'"))
    } else if !text.contains('"') {
        Some(format!("\"{text}\""))
    } else {
        None
    }
}

impl Builder {
    fn refuse(&mut self, at: &str, why: impl Into<String>) {
        self.problems.push(format!("{at}: {}", why.into()));
    }

    /// Refuses every assertion keyword of `schema` outside `allowed`.
    fn only(&mut self, schema: &Value, at: &str, allowed: &[&str]) -> bool {
        let Some(map) = schema.as_object() else {
            self.refuse(at, "must be an object schema");
            return false;
        };
        let mut ok = true;
        for key in map.keys() {
            let asserts =
                ASSERTIONS.contains(&key.as_str()) || MORE_ASSERTIONS.contains(&key.as_str());
            if asserts && !allowed.contains(&key.as_str()) {
                self.refuse(
                    &format!("{at}/{key}"),
                    format!("\"{key}\" here has no XForm equivalent; the form cannot be asked on a phone without it"),
                );
                ok = false;
            }
        }
        ok
    }

    /// The list id of `items`, reusing an identical list already made.
    fn list_for(&mut self, key: &str, items: Vec<(String, String)>) -> String {
        if let Some(same) = self.lists.iter().find(|l| l.items == items) {
            return same.id.clone();
        }
        let mut id = key.to_string();
        let mut n = 2;
        while self.lists.iter().any(|l| l.id == id) {
            id = format!("{key}_{n}");
            n += 1;
        }
        self.lists.push(ChoiceList {
            id: id.clone(),
            items,
        });
        id
    }

    fn choice_list(&mut self, key: &str, schema: &Value, at: &str) -> Option<String> {
        let options = choices(schema)?;
        let mut items = Vec::with_capacity(options.len());
        for (i, (value, title)) in options.into_iter().enumerate() {
            let Some(value) = value.as_str() else {
                self.refuse(
                    &format!("{at}/oneOf/{i}/const"),
                    "a choice must be a text value to be a phone choice",
                );
                return None;
            };
            if value.is_empty() || value.chars().any(char::is_whitespace) {
                self.refuse(
                    &format!("{at}/oneOf/{i}/const"),
                    "a choice value may not be empty or hold spaces (the phone separates chosen values with spaces)",
                );
                return None;
            }
            items.push((
                value.to_string(),
                title.unwrap_or_else(|| value.to_string()),
            ));
        }
        Some(self.list_for(key, items))
    }

    fn object_children(&mut self, schema: &Value, at: &str) -> Vec<Node> {
        let Some(props) = schema.get("properties").and_then(Value::as_object) else {
            return Vec::new();
        };
        let required: Vec<&str> = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut nodes = Vec::with_capacity(props.len());
        for (key, prop) in props {
            let here = format!("{at}/properties/{}", escape_token(key));
            if !is_plain_name(key) {
                self.refuse(&here, "the name must be letters, digits and _ (not __), starting with a letter: it becomes an XML element");
                continue;
            }
            if let Some(node) = self.node(key, prop, &here, required.contains(&key.as_str())) {
                nodes.push(node);
            }
        }
        for name in &required {
            if !props.contains_key(*name) {
                self.refuse(
                    &format!("{at}/required"),
                    format!("{name:?} is required but not a property"),
                );
            }
        }
        self.rules(schema, at, &mut nodes);
        nodes
    }

    fn node(&mut self, key: &str, prop: &Value, at: &str, required: bool) -> Option<Node> {
        let relevant = match prop.get("x-relevant") {
            None => None,
            Some(rule) => match Predicate::<FieldRef>::parse(rule) {
                Ok(p) => Some(p),
                Err(why) => {
                    self.refuse(&format!("{at}/x-relevant"), why);
                    return None;
                }
            },
        };
        let translations = prop
            .get("x-labels")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(lang, l)| Some((lang.clone(), l.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let kind = self.kind(key, prop, at, required)?;
        Some(Node {
            name: key.to_string(),
            label: text(prop, "title").unwrap_or_else(|| key.to_string()),
            hint: text(prop, "description"),
            translations,
            pointer: at.to_string(),
            required,
            relevant,
            kind,
        })
    }

    fn kind(&mut self, key: &str, prop: &Value, at: &str, required: bool) -> Option<Kind> {
        // `anyOf: [T, "unknown"]`: a known/unknown question, then T.
        if let Some(any) = prop.get("anyOf").and_then(Value::as_array) {
            if choices(prop).is_none() {
                let consts = any.iter().filter(|s| is_unknown_const(s)).count();
                if any.len() != 2 || consts == 0 || consts == 2 {
                    self.refuse(at, "\"anyOf\" is only understood as [a value, a text constant such as \"unknown\"] or as a list of choices");
                    return None;
                }
                self.only(prop, at, &["anyOf"]);
                let (i, inner) = any.iter().enumerate().find(|(_, s)| !is_unknown_const(s))?;
                let inner_at = format!("{at}/anyOf/{i}");
                let unknown_at = format!("{at}/anyOf/{}", 1 - i);
                self.only(&any[1 - i], &unknown_at, &["const"]);
                let value = any[1 - i]["const"].as_str().unwrap_or_default().to_string();
                let unknown_label = text(&any[1 - i], "title").unwrap_or_else(|| value.clone());
                let list = self.list_for(
                    KNOWN_LIST,
                    vec![
                        ("known".into(), "Known".into()),
                        (value.clone(), unknown_label),
                    ],
                );
                let unknown = OrConst { list, value };
                return match self.scalar(key, inner, &inner_at)? {
                    Scalar::Leaf(leaf, constraints) => Some(Kind::Question {
                        leaf,
                        constraints,
                        unknown: Some(unknown),
                    }),
                    Scalar::Hidden => Some(Kind::Hidden { many: false }),
                };
            }
        }
        if prop.get("x-case-number").is_some() {
            // The server fills it: not asked on the phone (docs/odk.md).
            return Some(Kind::Hidden { many: false });
        }
        if prop.get("x-attachment").is_some() {
            return self.scalar(key, prop, at).map(Scalar::into_kind);
        }
        match prop.get("type").and_then(Value::as_str) {
            Some("object") => {
                self.only(
                    prop,
                    at,
                    &[
                        "type",
                        "properties",
                        "required",
                        "additionalProperties",
                        "if",
                        "then",
                    ],
                );
                let children = self.object_children(prop, at);
                let has_required = prop
                    .get("required")
                    .and_then(Value::as_array)
                    .is_some_and(|r| !r.is_empty());
                Some(Kind::Group {
                    children,
                    toggle: !required && has_required,
                })
            }
            Some("array") => self.array(key, prop, at, required),
            _ => self.scalar(key, prop, at).map(Scalar::into_kind),
        }
    }

    fn array(&mut self, key: &str, prop: &Value, at: &str, required: bool) -> Option<Kind> {
        let items = prop.get("items").unwrap_or(&Value::Null);
        let items_at = format!("{at}/items");
        let min = prop.get("minItems").and_then(Value::as_u64).unwrap_or(0) as usize;
        // A repeat the phone leaves with no item is not sent at all, so a
        // required one needs an item to be there (docs/odk.md), as a
        // required text needs more than "".
        let repeat_min = if required { min.max(1) } else { min };
        let max = prop
            .get("maxItems")
            .and_then(Value::as_u64)
            .map(|n| n as usize);
        if choices(items).is_some() {
            // A select-multiple.
            self.only(
                prop,
                at,
                &[
                    "type",
                    "items",
                    "maxItems",
                    "minItems",
                    "uniqueItems",
                    "if",
                    "then",
                ],
            );
            self.only(items, &items_at, &["type", "oneOf", "anyOf", "enum"]);
            let list = self.choice_list(key, items, &items_at)?;
            let mut constraints = Vec::new();
            if min > 0 {
                constraints.push(format!("count-selected(.) >= {min}"));
            }
            if let Some(max) = max {
                constraints.push(format!("count-selected(.) <= {max}"));
            }
            // `if: {contains: …}, then: {maxItems: N}`: "at most N when one
            // of these is chosen" (social assessment's non-return bars).
            let refused = "only \"if it contains one of its choices, then at most N\" can be put on a phone; this rule cannot";
            match (prop.get("if"), prop.get("then")) {
                (None, None) => {}
                (Some(cond), Some(then)) => {
                    let choices: Vec<&str> = self
                        .lists
                        .iter()
                        .find(|l| l.id == list)
                        .map(|l| l.items.iter().map(|(v, _)| v.as_str()).collect())
                        .unwrap_or_default();
                    let values = contains_values(cond)
                        .filter(|vs| vs.iter().all(|v| choices.contains(&v.as_str())));
                    let most = then
                        .as_object()
                        .filter(|t| t.len() == 1)
                        .and_then(|t| t.get("maxItems"))
                        .and_then(Value::as_u64);
                    let (Some(values), Some(most)) = (values, most) else {
                        self.refuse(&format!("{at}/if"), refused);
                        return None;
                    };
                    let any = values
                        .iter()
                        .map(|v| format!("selected(., '{v}')"))
                        .collect::<Vec<_>>()
                        .join(" or ");
                    constraints.push(format!("not({any}) or count-selected(.) <= {most}"));
                }
                _ => {
                    self.refuse(
                        &format!("{at}/if"),
                        "\"if\" and \"then\" must come together",
                    );
                    return None;
                }
            }
            return Some(Kind::Question {
                leaf: Leaf::Many(list),
                constraints,
                unknown: None,
            });
        }
        self.only(
            prop,
            at,
            &["type", "items", "maxItems", "minItems", "uniqueItems"],
        );
        if items.get("format").and_then(Value::as_str) == Some("uuid") {
            // References to records: filled by entities, not asked.
            self.only(items, &items_at, &["type", "format"]);
            return Some(Kind::Hidden { many: true });
        }
        if prop.get("uniqueItems") == Some(&Value::Bool(true)) {
            self.refuse(
                &format!("{at}/uniqueItems"),
                "a list of distinct items without fixed choices cannot be checked on a phone",
            );
            return None;
        }
        if items.get("type").and_then(Value::as_str) == Some("object") {
            self.only(
                items,
                &items_at,
                &["type", "properties", "required", "additionalProperties"],
            );
            let children = self.object_children(items, &items_at);
            return Some(Kind::Repeat {
                children,
                min: repeat_min,
                max,
            });
        }
        match self.scalar(LIST_VALUE, items, &items_at)? {
            Scalar::Leaf(value, constraints) => Some(Kind::List {
                value,
                constraints,
                min: repeat_min,
                max,
            }),
            Scalar::Hidden => Some(Kind::Hidden { many: true }),
        }
    }

    fn scalar(&mut self, key: &str, schema: &Value, at: &str) -> Option<Scalar> {
        let ty = schema.get("type").and_then(Value::as_str);
        let mut constraints = Vec::new();
        if let Some(attachment) = schema.get("x-attachment") {
            self.only(schema, at, &["type", "maxLength"]);
            let types: Vec<&str> = attachment
                .get("media_types")
                .and_then(Value::as_array)
                .map(|m| m.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let family =
                |prefix: &str| !types.is_empty() && types.iter().all(|t| t.starts_with(prefix));
            // One <upload> takes one media family; mixed kinds take any file
            // and the server checks the type (docs/odk.md).
            let mediatype = if family("image/") {
                "image/*"
            } else if family("audio/") {
                "audio/*"
            } else if family("video/") {
                "video/*"
            } else {
                "application/*"
            };
            return Some(Scalar::Leaf(
                Leaf::Upload {
                    mediatype: mediatype.into(),
                },
                constraints,
            ));
        }
        if choices(schema).is_some() {
            self.only(schema, at, &["type", "oneOf", "anyOf", "enum"]);
            let list = self.choice_list(key, schema, at)?;
            return Some(Scalar::Leaf(Leaf::One(list), constraints));
        }
        let leaf = match ty {
            Some("boolean") => {
                self.only(schema, at, &["type", "const"]);
                match schema.get("const") {
                    None => {}
                    Some(Value::Bool(b)) => constraints.push(format!(". = '{b}'")),
                    Some(_) => {
                        self.refuse(
                            &format!("{at}/const"),
                            "a yes/no question can only be fixed to true or false",
                        );
                        return None;
                    }
                }
                Leaf::Boolean
            }
            Some(t @ ("integer" | "number")) => {
                self.only(schema, at, &["type", "minimum", "maximum"]);
                for (word, op) in [("minimum", ">="), ("maximum", "<=")] {
                    if let Some(n) = schema.get(word) {
                        if !n.is_number() {
                            self.refuse(&format!("{at}/{word}"), "must be a number");
                            return None;
                        }
                        constraints.push(format!(". {op} {n}"));
                    }
                }
                if t == "integer" {
                    Leaf::Integer
                } else {
                    Leaf::Decimal
                }
            }
            Some("string") => {
                self.only(
                    schema,
                    at,
                    &["type", "maxLength", "pattern", "format", "not"],
                );
                if let Some(not) = schema.get("not") {
                    // `not: {const: ""}`: an empty answer is no answer on a
                    // phone, so this holds by itself.
                    if not != &serde_json::json!({"const": ""}) {
                        self.refuse(
                            &format!("{at}/not"),
                            "only \"not\": {\"const\": \"\"} is understood on a text",
                        );
                        return None;
                    }
                }
                let format = schema.get("format").and_then(Value::as_str);
                if format == Some("uuid") {
                    return Some(Scalar::Hidden);
                }
                if let Some(n) = schema.get("maxLength") {
                    let Some(n) = n.as_u64() else {
                        self.refuse(&format!("{at}/maxLength"), "must be a whole number");
                        return None;
                    };
                    if !matches!(format, Some("date" | "date-time")) {
                        constraints.push(format!("string-length(.) <= {n}"));
                    }
                }
                if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
                    let Some(lit) = literal(pattern) else {
                        self.refuse(
                            &format!("{at}/pattern"),
                            "a pattern holding both ' and \" cannot be written in XPath",
                        );
                        return None;
                    };
                    constraints.push(format!("regex(., {lit})"));
                }
                match format {
                    None => Leaf::Text,
                    Some("date") => Leaf::Date,
                    Some("date-time") => Leaf::DateTime,
                    Some("email") => {
                        constraints.push(format!(
                            "regex(., {})",
                            literal(EMAIL_PATTERN).unwrap_or_default()
                        ));
                        Leaf::Text
                    }
                    Some(other) => {
                        self.refuse(
                            &format!("{at}/format"),
                            format!("format {other:?} has no phone question"),
                        );
                        return None;
                    }
                }
            }
            _ => {
                if schema.get("const").is_some() {
                    self.refuse(at, "a fixed value without a type has no phone question");
                } else {
                    self.refuse(at, "a value needs a \"type\" (string, integer, number, boolean, object or array) to be asked on a phone");
                }
                return None;
            }
        };
        Some(Scalar::Leaf(leaf, constraints))
    }

    /// `if`/`then` on an object: each rule becomes a constraint on the field
    /// `then` restricts. Only the shape the forms use is translated:
    /// "if field A contains one of these values, then field B is not V".
    fn rules(&mut self, schema: &Value, at: &str, nodes: &mut [Node]) {
        let (cond, then) = match (schema.get("if"), schema.get("then")) {
            (None, None) => return,
            (Some(c), Some(t)) if schema.get("else").is_none() => (c, t),
            _ => {
                self.refuse(
                    &format!("{at}/if"),
                    "\"if\" needs \"then\" and no \"else\" to be put on a phone",
                );
                return;
            }
        };
        let refused = "only \"if field A contains one of these values (and is answered), then field B is not V\" can be put on a phone; this rule cannot";
        let Some((sibling, values)) = object_condition(cond) else {
            self.refuse(&format!("{at}/if"), refused);
            return;
        };
        let Some((target, forbidden)) = object_consequence(then) else {
            self.refuse(&format!("{at}/then"), refused);
            return;
        };
        let sibling_ok = nodes.iter().any(|n| {
            n.name == sibling
                && matches!(
                    &n.kind,
                    Kind::Question {
                        leaf: Leaf::Many(_),
                        unknown: None,
                        ..
                    }
                )
        });
        let Some(node) = nodes.iter_mut().find(|n| n.name == target) else {
            self.refuse(
                &format!("{at}/then"),
                format!("{target:?} is not a field here"),
            );
            return;
        };
        let lit = literal(&forbidden);
        let any = values
            .iter()
            .map(|v| literal(v).map(|v| format!("selected(../{sibling}, {v})")))
            .collect::<Option<Vec<_>>>();
        match (&mut node.kind, lit, any) {
            (
                Kind::Question {
                    leaf: Leaf::One(_) | Leaf::Text,
                    unknown: None,
                    constraints,
                },
                Some(lit),
                Some(any),
            ) if sibling_ok => {
                constraints.push(format!("not({}) or . != {lit}", any.join(" or ")));
            }
            _ => self.refuse(&format!("{at}/if"), refused),
        }
    }
}

const EMAIL_PATTERN: &str = "^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$";

enum Scalar {
    Leaf(Leaf, Vec<String>),
    Hidden,
}

impl Scalar {
    fn into_kind(self) -> Kind {
        match self {
            Scalar::Leaf(leaf, constraints) => Kind::Question {
                leaf,
                constraints,
                unknown: None,
            },
            Scalar::Hidden => Kind::Hidden { many: false },
        }
    }
}

/// `{contains: {const: v}}` or `{contains: {enum: [..]}}` → the values.
fn contains_values(cond: &Value) -> Option<Vec<String>> {
    let map = cond.as_object()?;
    if map.len() != 1 {
        return None;
    }
    let inner = map.get("contains")?.as_object()?;
    if inner.len() != 1 {
        return None;
    }
    if let Some(v) = inner.get("const") {
        return Some(vec![v.as_str()?.to_string()]);
    }
    inner
        .get("enum")?
        .as_array()?
        .iter()
        .map(|v| v.as_str().map(str::to_string))
        .collect()
}

/// The one property a `patternProperties` names exactly (`^name$`).
fn exact_property(value: &Value) -> Option<(String, &Value)> {
    let map = value.get("patternProperties")?.as_object()?;
    if map.len() != 1 {
        return None;
    }
    let (pattern, schema) = map.iter().next()?;
    let name = pattern.strip_prefix('^')?.strip_suffix('$')?;
    is_plain_name(name).then(|| (name.to_string(), schema))
}

/// `if: {patternProperties: {"^A$": {contains: ...}}, required: ["A"]}`.
fn object_condition(cond: &Value) -> Option<(String, Vec<String>)> {
    let map = cond.as_object()?;
    let (name, schema) = exact_property(cond)?;
    let required_ok = match map.get("required") {
        Some(r) => r.as_array()? == &vec![Value::String(name.clone())],
        None => false,
    };
    if !required_ok || map.len() != 2 {
        return None;
    }
    Some((name, contains_values(schema)?))
}

/// `then: {patternProperties: {"^B$": {not: {const: V}}}}`.
fn object_consequence(then: &Value) -> Option<(String, String)> {
    if then.as_object()?.len() != 1 {
        return None;
    }
    let (name, schema) = exact_property(then)?;
    if schema.as_object()?.len() != 1 {
        return None;
    }
    let not = schema.get("not")?.as_object()?;
    if not.len() != 1 {
        return None;
    }
    Some((name, not.get("const")?.as_str()?.to_string()))
}
