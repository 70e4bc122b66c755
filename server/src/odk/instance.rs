//! A filled XForm instance (the `<data>` of an OpenRosa submission) →
//! the answers JSON the form's JSON-Schema validator takes, and its `meta`
//! apart. Read with the same mapping the XForm was written from
//! (`nodes::FormTable`), so the two directions cannot drift; `to_xml` is
//! the way back, for tests and tools.

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use serde_json::{Map, Number, Value};

use super::nodes::{
    FormTable, Kind, Leaf, Node, COUNT_SUFFIX, KNOWN_SUFFIX, LIST_VALUE, PRESENT_SUFFIX,
};
use super::xform::{BASE_CASE_VERSION, CASE_ID};

/// Deepest nesting an instance may have: forms nest a few levels; this is
/// far above any and stops a hostile document early.
const MAX_DEPTH: usize = 64;

/// `meta` of an instance, as the envelope needs it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Meta {
    /// `meta/instanceID` without `uuid:`.
    pub instance_id: Option<String>,
    /// `meta/deprecatedID` (the instance an edit replaces) without `uuid:`.
    pub deprecated_id: Option<String>,
    /// As the phone wrote them (`2026-05-01T10:15:00.000+05:00`).
    pub time_start: Option<String>,
    pub time_end: Option<String>,
    pub device_id: Option<String>,
    pub case_id: Option<String>,
    pub base_case_version: Option<String>,
    /// `meta/entity/@id`: the case the entity made or changed is.
    pub entity_id: Option<String>,
    /// `meta/entity/@baseVersion`: the case list version it was made from.
    pub entity_base_version: Option<String>,
}

/// A read instance: which form and version it says it is, its meta, and
/// the answers.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub form_id: String,
    /// The root's `version`: the ODK version, which may carry a `~k2`.
    pub version: Option<String>,
    pub meta: Meta,
    pub answers: Map<String, Value>,
}

/// A parsed XML element: local name, attributes, text, children.
#[derive(Debug, Clone, Default)]
struct Element {
    name: String,
    attrs: Vec<(String, String)>,
    text: String,
    children: Vec<Element>,
}

impl Element {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The text of a child, `None` when absent or blank.
    fn value(&self, name: &str) -> Option<&str> {
        self.child(name)
            .map(|c| c.text.trim())
            .filter(|t| !t.is_empty())
    }
}

fn local(name: &[u8]) -> String {
    let name = String::from_utf8_lossy(name);
    match name.rsplit_once(':') {
        Some((_, l)) => l.to_string(),
        None => name.into_owned(),
    }
}

fn start_element(e: &BytesStart) -> Result<Element, String> {
    let mut attrs = Vec::new();
    for a in e.attributes() {
        let a = a.map_err(|e| format!("a malformed attribute: {e}"))?;
        let value = a
            .unescape_value()
            .map_err(|e| format!("a malformed attribute value: {e}"))?;
        attrs.push((local(a.key.as_ref()), value.into_owned()));
    }
    Ok(Element {
        name: local(e.name().as_ref()),
        attrs,
        ..Element::default()
    })
}

fn parse(xml: &str) -> Result<Element, String> {
    let mut reader = Reader::from_str(xml);
    let mut stack: Vec<Element> = Vec::new();
    let mut root = None;
    loop {
        let event = reader.read_event().map_err(|e| {
            format!(
                "not well-formed XML at byte {}: {e}",
                reader.buffer_position()
            )
        })?;
        match event {
            Event::Start(e) => {
                if stack.len() >= MAX_DEPTH {
                    return Err("the XML nests too deeply".into());
                }
                stack.push(start_element(&e)?);
            }
            Event::Empty(e) => {
                let element = start_element(&e)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(element),
                    None => root = Some(element),
                }
            }
            Event::End(_) => {
                let element = stack.pop().ok_or("an end tag without a start")?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(element),
                    None => root = Some(element),
                }
            }
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    let text = t.decode().map_err(|e| format!("bad text: {e}"))?;
                    top.text.push_str(&text);
                }
            }
            Event::CData(t) => {
                if let Some(top) = stack.last_mut() {
                    let text = t.decode().map_err(|e| format!("bad text: {e}"))?;
                    top.text.push_str(&text);
                }
            }
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref().map_err(|e| format!("{e}"))? {
                    Some(c) => c.to_string(),
                    None => match r.decode().map_err(|e| format!("{e}"))?.as_ref() {
                        "amp" => "&".into(),
                        "lt" => "<".into(),
                        "gt" => ">".into(),
                        "quot" => "\"".into(),
                        "apos" => "'".into(),
                        other => return Err(format!("unknown entity &{other};")),
                    },
                };
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&resolved);
                }
            }
            Event::DocType(_) => return Err("a DOCTYPE is not accepted in a submission".into()),
            Event::Eof => break,
            _ => {}
        }
    }
    if !stack.is_empty() {
        return Err("the XML ends inside an element".into());
    }
    root.ok_or_else(|| "the XML has no root element".into())
}

fn strip_uuid(id: &str) -> String {
    id.strip_prefix("uuid:").unwrap_or(id).to_string()
}

/// Reads a filled instance of `table`'s form. Empty elements are
/// unanswered questions and are dropped; elements the form does not have
/// are refused (they mean the instance is of another form or version).
pub fn read(table: &FormTable, xml: &str) -> Result<Instance, String> {
    let root = parse(xml)?;
    let form_id = root
        .attr("id")
        .ok_or("the instance's root has no id attribute (the form id)")?
        .to_string();
    if form_id != table.meta.id {
        return Err(format!(
            "the instance is of form {form_id:?}, not {:?}",
            table.meta.id
        ));
    }
    let mut meta = Meta::default();
    if let Some(m) = root.child("meta") {
        meta.instance_id = m.value("instanceID").map(strip_uuid);
        meta.deprecated_id = m.value("deprecatedID").map(strip_uuid);
        meta.time_start = m.value("timeStart").map(str::to_string);
        meta.time_end = m.value("timeEnd").map(str::to_string);
        meta.device_id = m.value("deviceID").map(str::to_string);
        meta.case_id = m.value(CASE_ID).map(str::to_string);
        meta.base_case_version = m.value(BASE_CASE_VERSION).map(str::to_string);
        if let Some(entity) = m.child("entity") {
            let attr = |name: &str| {
                entity
                    .attr(name)
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .map(str::to_string)
            };
            meta.entity_id = attr("id");
            meta.entity_base_version = attr("baseVersion");
        }
    }
    let answers = read_object(&table.nodes, &root, "/data", true)?;
    Ok(Instance {
        form_id,
        version: root.attr("version").map(str::to_string),
        meta,
        answers,
    })
}

/// Whether `name` is an element `nodes` account for.
fn known_element(nodes: &[Node], name: &str, top: bool) -> bool {
    if top && name == "meta" {
        return true;
    }
    nodes.iter().any(|n| {
        name == n.name
            || match &n.kind {
                Kind::Group { toggle: true, .. } => name == format!("{}{PRESENT_SUFFIX}", n.name),
                Kind::Repeat { .. } | Kind::List { .. } => {
                    name == format!("{}{COUNT_SUFFIX}", n.name)
                }
                Kind::Question {
                    unknown: Some(_), ..
                } => name == format!("{}{KNOWN_SUFFIX}", n.name),
                _ => false,
            }
    })
}

fn read_object(
    nodes: &[Node],
    element: &Element,
    at: &str,
    top: bool,
) -> Result<Map<String, Value>, String> {
    if let Some(extra) = element
        .children
        .iter()
        .find(|c| !known_element(nodes, &c.name, top))
    {
        return Err(format!(
            "{at}/{}: the form has no such question",
            extra.name
        ));
    }
    let mut out = Map::new();
    for node in nodes {
        let here = format!("{at}/{}", node.name);
        let value = match &node.kind {
            Kind::Question { leaf, unknown, .. } => {
                let chosen = element.value(&format!("{}{KNOWN_SUFFIX}", node.name));
                if let Some(alt) = unknown
                    .as_ref()
                    .filter(|a| chosen == Some(a.value.as_str()))
                {
                    Some(Value::String(alt.value.clone()))
                } else {
                    match element.value(&node.name) {
                        Some(text) => Some(typed(leaf, text, &here)?),
                        None => None,
                    }
                }
            }
            Kind::Hidden { many: false } => element
                .value(&node.name)
                .map(|t| Value::String(t.to_string())),
            Kind::Hidden { many: true } => element.value(&node.name).map(|t| {
                Value::Array(
                    t.split_whitespace()
                        .map(|v| Value::String(v.into()))
                        .collect(),
                )
            }),
            Kind::Group { children, toggle } => {
                let present = !*toggle
                    || element.value(&format!("{}{PRESENT_SUFFIX}", node.name)) == Some("true");
                match element.child(&node.name) {
                    Some(child) if present => {
                        let map = read_object(children, child, &here, false)?;
                        // A section is kept when it holds an answer, was said
                        // to be there, or must always be there. A required
                        // section under a condition with nothing answered
                        // is one whose condition was false.
                        let keep = map.values().any(answered)
                            || *toggle
                            || (node.required && node.relevant.is_none());
                        keep.then_some(Value::Object(map))
                    }
                    _ => None,
                }
            }
            Kind::Repeat { children, .. } => {
                let mut items = Vec::new();
                for (i, item) in items_of(element, &node.name).enumerate() {
                    items.push(Value::Object(read_object(
                        children,
                        item,
                        &format!("{here}[{}]", i + 1),
                        false,
                    )?));
                }
                (!items.is_empty()).then_some(Value::Array(items))
            }
            Kind::List { value, .. } => {
                let mut items = Vec::new();
                for (i, item) in items_of(element, &node.name).enumerate() {
                    if let Some(text) = item.value(LIST_VALUE) {
                        items.push(typed(
                            value,
                            text,
                            &format!("{here}[{}]/{LIST_VALUE}", i + 1),
                        )?);
                    }
                }
                (!items.is_empty()).then_some(Value::Array(items))
            }
        };
        if let Some(v) = value {
            out.insert(node.name.clone(), v);
        }
    }
    Ok(out)
}

/// Whether a read value holds an answer: a section with only empty
/// sections inside holds none.
fn answered(value: &Value) -> bool {
    match value {
        Value::Object(map) => map.values().any(answered),
        _ => true,
    }
}

/// The items of a repeat, without a template a client may have left in.
fn items_of<'a>(element: &'a Element, name: &'a str) -> impl Iterator<Item = &'a Element> {
    element
        .children
        .iter()
        .filter(move |c| c.name == name && c.attr("template").is_none())
}

/// An answer that cannot be read is named by its place, never quoted:
/// the message reaches the phone (and logs), and answers are case data.
fn typed(leaf: &Leaf, text: &str, at: &str) -> Result<Value, String> {
    Ok(match leaf {
        Leaf::Integer => Value::Number(
            text.parse::<i64>()
                .map_err(|_| format!("{at}: the answer is not a whole number"))?
                .into(),
        ),
        Leaf::Decimal => match text.parse::<i64>() {
            Ok(n) => Value::Number(n.into()),
            Err(_) => Value::Number(
                text.parse::<f64>()
                    .ok()
                    .and_then(Number::from_f64)
                    .ok_or_else(|| format!("{at}: the answer is not a number"))?,
            ),
        },
        Leaf::Boolean => match text {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return Err(format!("{at}: the answer is neither true nor false")),
        },
        Leaf::Many(_) => Value::Array(
            text.split_whitespace()
                .map(|v| Value::String(v.to_string()))
                .collect(),
        ),
        Leaf::Text | Leaf::Date | Leaf::DateTime | Leaf::One(_) | Leaf::Upload { .. } => {
            Value::String(text.to_string())
        }
    })
}

/// Answers → the instance a phone would send with them (`instance_id`
/// with its `uuid:`): the inverse of [`read`], for tests and tools.
pub fn to_xml(table: &FormTable, answers: &Map<String, Value>, instance_id: &str) -> String {
    let mut sink = XmlSink(String::new());
    sink.0.push_str(&format!(
        "<data id=\"{}\" version=\"{}\">",
        escape(&table.meta.id),
        escape(&table.meta.version)
    ));
    write_object(&table.nodes, answers, &mut sink);
    sink.0.push_str(&format!(
        "<meta><instanceID>{}</instanceID></meta></data>",
        escape(instance_id)
    ));
    sink.0
}

/// One value of [`answer_paths`].
#[derive(Debug, Clone, PartialEq)]
pub struct PathAnswer {
    /// `/data/a/kids[2]/name`: repeat items numbered from 1.
    pub path: String,
    pub value: String,
    /// Asked on the phone; `false` for a hidden value (a reference that
    /// entities will fill), which an engine sets in the instance directly.
    pub asked: bool,
}

/// Answers → what is entered on the phone, in form order, the known /
/// unknown and "present?" questions included, computed counts left out.
/// For tests that fill a form in an engine.
pub fn answer_paths(table: &FormTable, answers: &Map<String, Value>) -> Vec<PathAnswer> {
    let mut sink = PathSink {
        at: vec!["/data".to_string()],
        out: Vec::new(),
    };
    write_object(&table.nodes, answers, &mut sink);
    sink.out
}

/// What walking answers through the mapping produces.
trait Sink {
    /// An element opens; `item`: its position in a repeat, from 1.
    fn open(&mut self, name: &str, item: Option<usize>);
    fn close(&mut self, name: &str);
    /// A leaf and who gives its value.
    fn leaf(&mut self, name: &str, text: &str, by: Source);
}

/// Who gives a leaf its value.
#[derive(Clone, Copy, PartialEq)]
enum Source {
    Question,
    /// Not asked: entities fill it.
    Hidden,
    /// Computed by the form (a repeat's count).
    Computed,
}

struct XmlSink(String);

impl Sink for XmlSink {
    fn open(&mut self, name: &str, _: Option<usize>) {
        self.0.push_str(&format!("<{name}>"));
    }
    fn close(&mut self, name: &str) {
        self.0.push_str(&format!("</{name}>"));
    }
    fn leaf(&mut self, name: &str, text: &str, _: Source) {
        if text.is_empty() {
            self.0.push_str(&format!("<{name}/>"));
        } else {
            self.0
                .push_str(&format!("<{name}>{}</{name}>", escape(text)));
        }
    }
}

struct PathSink {
    at: Vec<String>,
    out: Vec<PathAnswer>,
}

impl Sink for PathSink {
    fn open(&mut self, name: &str, item: Option<usize>) {
        self.at.push(match item {
            Some(i) => format!("{name}[{i}]"),
            None => name.to_string(),
        });
    }
    fn close(&mut self, _: &str) {
        self.at.pop();
    }
    fn leaf(&mut self, name: &str, text: &str, by: Source) {
        if by != Source::Computed && !text.is_empty() {
            self.out.push(PathAnswer {
                path: format!("{}/{name}", self.at.join("/")),
                value: text.to_string(),
                asked: by == Source::Question,
            });
        }
    }
}

fn escape(text: &str) -> String {
    quick_xml::escape::escape(text).into_owned()
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(scalar_text).collect::<Vec<_>>().join(" "),
        other => other.to_string(),
    }
}

fn write_object(nodes: &[Node], answers: &Map<String, Value>, out: &mut dyn Sink) {
    let empty = Map::new();
    for node in nodes {
        let name = node.name.as_str();
        let value = answers.get(name);
        match &node.kind {
            Kind::Question { unknown, .. } => {
                if let Some(alt) = unknown {
                    let is_const = value.and_then(Value::as_str) == Some(alt.value.as_str());
                    let known = match value {
                        Some(_) if is_const => alt.value.as_str(),
                        Some(_) => "known",
                        None => "",
                    };
                    out.leaf(&format!("{name}{KNOWN_SUFFIX}"), known, Source::Question);
                    let typed = value.filter(|_| !is_const);
                    out.leaf(
                        name,
                        &typed.map(scalar_text).unwrap_or_default(),
                        Source::Question,
                    );
                } else {
                    out.leaf(
                        name,
                        &value.map(scalar_text).unwrap_or_default(),
                        Source::Question,
                    );
                }
            }
            Kind::Hidden { .. } => out.leaf(
                name,
                &value.map(scalar_text).unwrap_or_default(),
                Source::Hidden,
            ),
            Kind::Group { children, toggle } => {
                if *toggle {
                    let present = if value.is_some() { "true" } else { "" };
                    out.leaf(
                        &format!("{name}{PRESENT_SUFFIX}"),
                        present,
                        Source::Question,
                    );
                }
                out.open(name, None);
                write_object(
                    children,
                    value.and_then(Value::as_object).unwrap_or(&empty),
                    out,
                );
                out.close(name);
            }
            Kind::Repeat { children, min, max } => {
                let items = value
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                for (i, item) in items.iter().enumerate() {
                    out.open(name, Some(i + 1));
                    write_object(children, item.as_object().unwrap_or(&empty), out);
                    out.close(name);
                }
                if *min > 0 || max.is_some() {
                    out.leaf(
                        &format!("{name}{COUNT_SUFFIX}"),
                        &items.len().to_string(),
                        Source::Computed,
                    );
                }
            }
            Kind::List { min, max, .. } => {
                let items = value
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                for (i, item) in items.iter().enumerate() {
                    out.open(name, Some(i + 1));
                    out.leaf(LIST_VALUE, &scalar_text(item), Source::Question);
                    out.close(name);
                }
                if *min > 0 || max.is_some() {
                    out.leaf(
                        &format!("{name}{COUNT_SUFFIX}"),
                        &items.len().to_string(),
                        Source::Computed,
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn table() -> FormTable {
        FormTable::build(&json!({
            "x-form": {"id": "kz.t", "programme": "kz", "version": "1", "source": "s",
                       "case": "none", "event": "e", "occurred_at": "/d"},
            "type": "object", "required": ["d"],
            "properties": {
                "d": {"type": "string", "format": "date"},
                "name": {"anyOf": [{"type": "string"}, {"const": "unknown"}]},
                "ok": {"type": "boolean"},
                "langs": {"type": "array", "maxItems": 3, "items": {"type": "string", "oneOf": [{"const": "kk"}, {"const": "ru"}]}},
                "phones": {"type": "array", "maxItems": 3, "items": {"type": "string"}},
                "sib": {"type": "array", "maxItems": 3, "items": {"type": "object", "properties": {"age": {"type": "integer"}}}},
                "extra": {"type": "object", "required": ["why"], "properties": {"why": {"type": "string"}}}
            }
        }))
        .unwrap()
    }

    #[test]
    fn answers_go_to_xml_and_come_back_the_same() {
        let t = table();
        let answers = json!({"d": "2026-01-02", "name": "unknown", "ok": false, "langs": ["kk", "ru"],
            "phones": ["+7 700 1", "8 & 9"], "sib": [{"age": 3}, {}], "extra": {"why": "a <b>"}});
        let xml = to_xml(&t, answers.as_object().unwrap(), "uuid:abc");
        let back = read(&t, &xml).unwrap();
        assert_eq!(Value::Object(back.answers), answers);
        assert_eq!(back.meta.instance_id.as_deref(), Some("abc"));
        let paths: Vec<(String, String)> = answer_paths(&t, answers.as_object().unwrap())
            .into_iter()
            .map(|a| (a.path, a.value))
            .collect();
        assert!(paths.contains(&("/data/name__known".into(), "unknown".into())));
        assert!(paths.contains(&("/data/sib[1]/age".into(), "3".into())));
        assert!(paths.contains(&("/data/phones[2]/value".into(), "8 & 9".into())));
        assert!(paths.contains(&("/data/extra__present".into(), "true".into())));
        assert!(!paths.iter().any(|(p, _)| p.contains("__count")));
        // Unanswered: nothing but the date; the optional section is absent.
        let only = json!({"d": "2026-01-02"});
        let xml = to_xml(&t, only.as_object().unwrap(), "uuid:x");
        assert_eq!(Value::Object(read(&t, &xml).unwrap().answers), only);
    }

    #[test]
    fn foreign_elements_and_bad_values_are_refused_with_their_place() {
        let t = table();
        let err = read(
            &t,
            "<data id=\"kz.t\"><d>2026-01-01</d><nope>1</nope></data>",
        )
        .unwrap_err();
        assert!(err.contains("/data/nope"), "{err}");
        let err = read(&t, "<data id=\"kz.t\"><sib><age>x</age></sib></data>").unwrap_err();
        assert!(err.contains("/data/sib[1]/age"), "{err}");
        let err = read(&t, "<data id=\"kz.other\"/>").unwrap_err();
        assert!(err.contains("kz.other"), "{err}");
        assert!(read(&t, "<!DOCTYPE x [<!ENTITY a \"b\">]><data id=\"kz.t\"/>").is_err());
    }
}
