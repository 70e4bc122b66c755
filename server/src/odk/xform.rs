//! JSON-Schema form version → XForm (ODK XForms 1.0, as pyxform 4.5.0
//! writes it): a pure function of the bundled schema and the programme's
//! public key. The mapping itself is `nodes::FormTable`; this file writes
//! it out and turns `x-relevant` predicates into XPath.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io;

use base64::Engine;
use quick_xml::events::attributes::Attribute;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use quick_xml::name::QName;
use quick_xml::Writer;
use serde_json::Value;

use super::nodes::{
    literal, ChoiceList, FormTable, Kind, Leaf, Node, COUNT_SUFFIX, KNOWN_SUFFIX, LIST_VALUE,
    PRESENT_SUFFIX, YES_NO_LIST,
};
use crate::forms::model::CaseRole;
use crate::forms::relevance::{FieldRef, Op, Predicate};

const XFORMS: &str = "http://www.w3.org/2002/xforms";

/// The form's XML, or every reason it cannot be one (form, schema location,
/// why). `public_key_der` is the programme's RSA key as DER
/// SubjectPublicKeyInfo; Collect encrypts every submission with it.
pub fn generate(bundled: &Value, public_key_der: &[u8]) -> Result<Vec<u8>, Vec<String>> {
    let table = FormTable::build(bundled)?;
    generate_from(&table, public_key_der)
}

/// The XML of an already built mapping.
pub fn generate_from(table: &FormTable, public_key_der: &[u8]) -> Result<Vec<u8>, Vec<String>> {
    let mut index = Index::default();
    index.add_all(&table.nodes, &[], &[], &[]);
    let mut binds = Binds {
        index: &index,
        out: Vec::new(),
        problems: Vec::new(),
    };
    binds.nodes(&table.nodes, &[], &[]);
    if !binds.problems.is_empty() {
        let (id, v) = (&table.meta.id, &table.meta.version);
        return Err(binds
            .problems
            .into_iter()
            .map(|p| format!("{id} {v}: {p}"))
            .collect());
    }
    if table.meta.case == CaseRole::Updates && table.list(DATASET).is_some() {
        return Err(vec![format!(
            "{} {}: a choice list named {DATASET:?} would hide the case list of the phone; rename the field",
            table.meta.id, table.meta.version
        )]);
    }
    let binds = binds.out;
    let key = base64::engine::general_purpose::STANDARD.encode(public_key_der);
    write(table, &binds, &key).map_err(|e| vec![format!("writing the XForm: {e}")])
}

/// Where a data location (JSON pointer tokens, repeat items as `[]`) sits
/// in the XML, and what is there.
#[derive(Default)]
struct Index<'a> {
    by_tokens: HashMap<Vec<String>, Target<'a>>,
}

struct Target<'a> {
    node: &'a Node,
    /// Element names from `/data`.
    xml: Vec<String>,
    /// For each element of `xml`, whether it is a repeat item.
    repeats: Vec<bool>,
}

impl<'a> Index<'a> {
    fn add_all(&mut self, nodes: &'a [Node], tokens: &[String], xml: &[String], repeats: &[bool]) {
        for node in nodes {
            let mut t = tokens.to_vec();
            t.push(node.name.clone());
            let mut x = xml.to_vec();
            x.push(node.name.clone());
            let mut r = repeats.to_vec();
            let is_repeat = matches!(node.kind, Kind::Repeat { .. } | Kind::List { .. });
            r.push(is_repeat);
            self.by_tokens.insert(
                t.clone(),
                Target {
                    node,
                    xml: x.clone(),
                    repeats: r.clone(),
                },
            );
            match &node.kind {
                Kind::Group { children, .. } => self.add_all(children, &t, &x, &r),
                Kind::Repeat { children, .. } => {
                    t.push("[]".into());
                    self.add_all(children, &t, &x, &r);
                }
                _ => {}
            }
        }
    }
}

/// One `<bind>`: its attributes in order.
type Bind = Vec<(&'static str, String)>;

struct Binds<'a> {
    index: &'a Index<'a>,
    out: Vec<Bind>,
    problems: Vec<String>,
}

fn abs(xml: &[String]) -> String {
    format!("/data/{}", xml.join("/"))
}

fn and(parts: &[String]) -> Option<String> {
    match parts.len() {
        0 => None,
        1 => Some(parts[0].clone()),
        _ => Some(
            parts
                .iter()
                .map(|p| format!("({p})"))
                .collect::<Vec<_>>()
                .join(" and "),
        ),
    }
}

fn sibling(path: &str, suffix: &str) -> String {
    format!("{path}{suffix}")
}

impl Binds<'_> {
    /// `tokens`: data tokens of the object holding `nodes`; `xml`: its
    /// element path.
    fn nodes(&mut self, nodes: &[Node], tokens: &[String], xml: &[String]) {
        for node in nodes {
            let mut x = xml.to_vec();
            x.push(node.name.clone());
            let path = abs(&x);
            let relevant = node
                .relevant
                .as_ref()
                .and_then(|p| match self.xpath(p, tokens, &x) {
                    Ok(expr) => Some(expr),
                    Err(why) => {
                        self.problems
                            .push(format!("{}/x-relevant: {why}", node.pointer));
                        None
                    }
                });
            let required = node.required.then(|| "true()".to_string());
            let mut t = tokens.to_vec();
            t.push(node.name.clone());
            match &node.kind {
                Kind::Group { children, toggle } => {
                    let mut group_relevant = relevant.clone();
                    if *toggle {
                        let present = sibling(&path, PRESENT_SUFFIX);
                        self.bind(&present, "string", None, relevant.clone(), None, &[]);
                        group_relevant = Some(format!("../{}{PRESENT_SUFFIX} = 'true'", node.name));
                    }
                    self.bind_group(&path, group_relevant);
                    self.nodes(children, &t, &x);
                }
                Kind::Repeat { children, min, max } => {
                    self.bind_group(&path, relevant.clone());
                    self.count(node, &path, relevant, *min, *max);
                    t.push("[]".into());
                    self.nodes(children, &t, &x);
                }
                Kind::List {
                    value,
                    constraints,
                    min,
                    max,
                } => {
                    self.bind_group(&path, relevant.clone());
                    self.count(node, &path, relevant, *min, *max);
                    let inner = format!("{path}/{LIST_VALUE}");
                    self.bind(
                        &inner,
                        value.bind_type(),
                        Some("true()".into()),
                        None,
                        and(constraints),
                        &[],
                    );
                }
                Kind::Question {
                    leaf,
                    constraints,
                    unknown,
                } => {
                    if unknown.is_some() {
                        let known = sibling(&path, KNOWN_SUFFIX);
                        self.bind(&known, "string", required.clone(), relevant, None, &[]);
                        let typed_relevant = format!("../{}{KNOWN_SUFFIX} = 'known'", node.name);
                        self.bind(
                            &path,
                            leaf.bind_type(),
                            required,
                            Some(typed_relevant),
                            and(constraints),
                            &[],
                        );
                    } else {
                        self.bind(
                            &path,
                            leaf.bind_type(),
                            required,
                            relevant,
                            and(constraints),
                            &[],
                        );
                    }
                }
                Kind::Hidden { .. } => {
                    // Not asked: entities will fill references (docs/odk.md).
                    self.bind(&path, "string", None, relevant, None, &[]);
                }
            }
        }
    }

    fn bind_group(&mut self, path: &str, relevant: Option<String>) {
        if let Some(r) = relevant {
            self.out
                .push(vec![("nodeset", path.to_string()), ("relevant", r)]);
        }
    }

    /// The hidden count of a repeat, constrained to `minItems`..`maxItems`.
    fn count(
        &mut self,
        node: &Node,
        path: &str,
        relevant: Option<String>,
        min: usize,
        max: Option<usize>,
    ) {
        if min == 0 && max.is_none() {
            return;
        }
        let mut limits = Vec::new();
        if min > 0 {
            limits.push(format!(". >= {min}"));
        }
        if let Some(max) = max {
            limits.push(format!(". <= {max}"));
        }
        let count = sibling(path, COUNT_SUFFIX);
        let extra = vec![
            ("calculate", format!("count(../{})", node.name)),
            ("readonly", "true()".to_string()),
        ];
        self.bind(&count, "int", None, relevant, and(&limits), &extra);
    }

    fn bind(
        &mut self,
        path: &str,
        ty: &str,
        required: Option<String>,
        relevant: Option<String>,
        constraint: Option<String>,
        extra: &[(&'static str, String)],
    ) {
        let mut b: Bind = vec![("nodeset", path.to_string()), ("type", ty.to_string())];
        if let Some(r) = required {
            b.push(("required", r));
        }
        if let Some(r) = relevant {
            b.push(("relevant", r));
        }
        if let Some(c) = constraint {
            b.push(("constraint", c));
        }
        b.extend(extra.iter().cloned());
        self.out.push(b);
    }

    /// A predicate as XPath, evaluated at the node whose element path is
    /// `at`; `base` is the data tokens of the object holding that node.
    fn xpath(&self, p: &Predicate, base: &[String], at: &[String]) -> Result<String, String> {
        Ok(match p {
            Predicate::All(list) | Predicate::Any(list) => {
                let word = if matches!(p, Predicate::All(_)) {
                    " and "
                } else {
                    " or "
                };
                let parts = list
                    .iter()
                    .map(|q| self.xpath(q, base, at).map(|e| format!("({e})")))
                    .collect::<Result<Vec<_>, _>>()?;
                parts.join(word)
            }
            Predicate::Not(inner) => format!("not({})", self.xpath(inner, base, at)?),
            Predicate::Answered { field, want } => {
                let (target, path) = self.target(field, base, at)?;
                let expr = match &target.node.kind {
                    Kind::Repeat { .. } | Kind::List { .. } => format!("count({path}) > 0"),
                    Kind::Group { toggle: true, .. } => {
                        format!("{} = 'true'", sibling(&path, PRESENT_SUFFIX))
                    }
                    Kind::Group { .. } => {
                        return Err("\"answered\" on a section without a \"present?\" question has no meaning on a phone".into())
                    }
                    Kind::Question { .. } | Kind::Hidden { .. } => {
                        format!("string-length({}) > 0", value_of(target.node, &path))
                    }
                };
                if *want {
                    expr
                } else {
                    format!("not({expr})")
                }
            }
            Predicate::Compare { field, op, value } => {
                let (target, path) = self.target(field, base, at)?;
                let leaf = match &target.node.kind {
                    Kind::Question { leaf, .. } => Some(leaf),
                    Kind::Hidden { .. } => None,
                    Kind::List { .. } if *op == Op::Contains => {
                        let v = value_literal(value, None)?;
                        return Ok(format!("count({path}[{LIST_VALUE} = {v}]) > 0"));
                    }
                    _ => {
                        return Err(format!(
                            "a comparison with a section or a list ({}) has no meaning on a phone",
                            target.node.name
                        ))
                    }
                };
                let subject = value_of(target.node, &path);
                let lit = |v: &Value| value_literal(v, leaf);
                match op {
                    Op::Eq => format!("{subject} = {}", lit(value)?),
                    Op::Ne => format!("{subject} != {}", lit(value)?),
                    Op::In => {
                        let list = value.as_array().ok_or("\"in\" takes a list")?;
                        let parts = list
                            .iter()
                            .map(|v| Ok(format!("{subject} = {}", lit(v)?)))
                            .collect::<Result<Vec<_>, String>>()?;
                        format!("({})", parts.join(" or "))
                    }
                    Op::Contains => {
                        if !matches!(leaf, Some(Leaf::Many(_))) {
                            return Err(format!(
                                "\"contains\" needs a multiple-choice field, and {} is not one",
                                target.node.name
                            ));
                        }
                        format!("selected({subject}, {})", lit(value)?)
                    }
                    Op::Lt | Op::Lte | Op::Gt | Op::Gte => {
                        let sign = match op {
                            Op::Lt => "<",
                            Op::Lte => "<=",
                            Op::Gt => ">",
                            _ => ">=",
                        };
                        let rhs = match (leaf, value) {
                            (Some(Leaf::Integer | Leaf::Decimal), Value::Number(n)) => {
                                n.to_string()
                            }
                            (Some(Leaf::Date | Leaf::DateTime), Value::String(s)) => {
                                format!("date({})", literal(s).ok_or("quotes in a date")?)
                            }
                            _ => {
                                return Err(format!(
                                    "{} cannot be ordered against {value}",
                                    target.node.name
                                ))
                            }
                        };
                        format!("{subject} {sign} {rhs}")
                    }
                }
            }
        })
    }

    /// The target of a reference and the XPath that reaches it from `at`.
    fn target(
        &self,
        field: &FieldRef,
        base: &[String],
        at: &[String],
    ) -> Result<(&Target<'_>, String), String> {
        let tokens: Vec<String> = field
            .resolve(base)
            .ok_or("climbs above the form")?
            .into_iter()
            .map(|t| {
                if !t.is_empty() && t.chars().all(|c| c.is_ascii_digit()) {
                    "[]".into()
                } else {
                    t
                }
            })
            .collect();
        let target = self.index.by_tokens.get(&tokens).ok_or_else(|| {
            format!(
                "refers to /{}, which is not a field of the form",
                tokens.join("/")
            )
        })?;
        // The deepest repeat both share: above it an absolute path is one
        // node; below it only a relative path stays in the same item.
        let common = target
            .xml
            .iter()
            .zip(at)
            .take_while(|(a, b)| a == b)
            .count();
        let shared_repeat = target.repeats[..common].iter().any(|r| *r);
        // A repeat on the target's way that does not hold `at`: ambiguous.
        if target.repeats[common..target.xml.len().saturating_sub(1)]
            .iter()
            .any(|r| *r)
        {
            return Err(format!(
                "refers to {} inside a repeat that does not hold this question; a phone cannot tell which item",
                target.node.name
            ));
        }
        let path = if shared_repeat {
            let ups = at.len() - common;
            let mut steps = vec![".."; ups];
            let rest: Vec<&str> = target.xml[common..].iter().map(String::as_str).collect();
            steps.extend(rest);
            if steps.is_empty() {
                ".".to_string()
            } else {
                steps.join("/")
            }
        } else {
            abs(&target.xml)
        };
        Ok((target, path))
    }
}

/// The value a predicate compares: an "or unknown" field is "unknown" when
/// its known/unknown question says so.
fn value_of(node: &Node, path: &str) -> String {
    match &node.kind {
        Kind::Question {
            unknown: Some(alt), ..
        } => {
            let c = literal(&alt.value).unwrap_or_default();
            format!("if({} = {c}, {c}, {path})", sibling(path, KNOWN_SUFFIX))
        }
        _ => path.to_string(),
    }
}

fn value_literal(value: &Value, leaf: Option<&Leaf>) -> Result<String, String> {
    match value {
        Value::String(s) => literal(s).ok_or_else(|| format!("{s:?} holds both kinds of quote")),
        Value::Bool(b) => Ok(format!("'{b}'")),
        Value::Number(n) if matches!(leaf, Some(Leaf::Integer | Leaf::Decimal)) => {
            Ok(n.to_string())
        }
        Value::Number(n) => Ok(format!("'{n}'")),
        other => Err(format!("cannot compare with {other}")),
    }
}

/// Whether any node carries `x-labels`; their languages, sorted.
fn languages(nodes: &[Node], out: &mut Vec<String>) {
    for node in nodes {
        for (lang, _) in &node.translations {
            if !out.contains(lang) {
                out.push(lang.clone());
            }
        }
        match &node.kind {
            Kind::Group { children, .. } | Kind::Repeat { children, .. } => {
                languages(children, out)
            }
            _ => {}
        }
    }
}

/// A thin layer over quick-xml's writer: every text and attribute value
/// goes through its escaping.
struct Out<'a> {
    w: Writer<Vec<u8>>,
    table: &'a FormTable,
    /// Languages of `<itext>`; empty when the form has no translations.
    langs: Vec<String>,
}

fn write(table: &FormTable, binds: &[Bind], key: &str) -> io::Result<Vec<u8>> {
    let mut langs = Vec::new();
    languages(&table.nodes, &mut langs);
    langs.sort();
    let mut o = Out {
        w: Writer::new_with_indent(Vec::new(), b' ', 2),
        table,
        langs,
    };
    o.w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    o.root(
        "h:html",
        &[
            ("xmlns", XFORMS),
            ("xmlns:h", "http://www.w3.org/1999/xhtml"),
            ("xmlns:ev", "http://www.w3.org/2001/xml-events"),
            ("xmlns:jr", "http://openrosa.org/javarosa"),
            ("xmlns:odk", "http://www.opendatakit.org/xforms"),
            ("xmlns:orx", "http://openrosa.org/xforms"),
            ("xmlns:xsd", "http://www.w3.org/2001/XMLSchema"),
        ],
        table.meta.case != CaseRole::None,
    )?;
    o.start("h:head", &[])?;
    o.text("h:title", &[], &table.title)?;
    let mut model = vec![("odk:xforms-version", "1.0.0")];
    // A form about a case makes or changes an entity of the case list
    // (docs/odk.md, "Cases on the phone").
    if table.meta.case != CaseRole::None {
        model.push(("entities:entities-version", ENTITIES_VERSION));
    }
    o.start("model", &model)?;
    o.itext()?;
    o.start("instance", &[])?;
    o.start(
        "data",
        &[
            ("id", table.meta.id.as_str()),
            ("version", table.meta.version.as_str()),
        ],
    )?;
    o.instance_nodes(&table.nodes, true)?;
    o.meta()?;
    o.end("data")?;
    o.end("instance")?;
    for list in &table.lists {
        o.choice_list(list)?;
    }
    if table.meta.case == CaseRole::Updates {
        // The phone's case list, as the manifest serves it.
        let src = format!("jr://file-csv/{DATASET}.csv");
        o.empty("instance", &[("id", DATASET), ("src", &src)])?;
    }
    for bind in binds {
        let attrs: Vec<(&str, &str)> = bind.iter().map(|(k, v)| (*k, v.as_str())).collect();
        o.empty("bind", &attrs)?;
    }
    o.meta_binds()?;
    // Collect encrypts every submission to the programme's key (brief §4).
    o.empty(
        "submission",
        &[("method", "post"), ("base64RsaPublicKey", key)],
    )?;
    o.end("model")?;
    o.end("h:head")?;
    o.start("h:body", &[])?;
    if table.meta.case == CaseRole::Updates {
        o.case_picker()?;
    }
    o.controls(&table.nodes, "/data")?;
    o.end("h:body")?;
    o.end("h:html")?;
    Ok(o.w.into_inner())
}

fn label_id(path: &str) -> String {
    format!("{path}:label")
}

impl Out<'_> {
    /// Attribute values are escaped here (`&`, `<`, `>`, `"`), leaving `'`
    /// as it is: XPath literals stay readable, as pyxform writes them.
    fn tag<'b>(name: &'b str, attrs: &[(&'b str, &'b str)]) -> BytesStart<'b> {
        let mut start = BytesStart::new(name);
        for (key, value) in attrs {
            let escaped = value
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('"', "&quot;");
            start.push_attribute(Attribute {
                key: QName(key.as_bytes()),
                value: Cow::Owned(escaped.into_bytes()),
            });
        }
        start
    }

    /// The root element; `entities`: it declares the entities namespace.
    fn root(&mut self, name: &str, attrs: &[(&str, &str)], entities: bool) -> io::Result<()> {
        let mut attrs = attrs.to_vec();
        if entities {
            attrs.insert(1, ("xmlns:entities", ENTITIES));
        }
        self.start(name, &attrs)
    }

    fn start(&mut self, name: &str, attrs: &[(&str, &str)]) -> io::Result<()> {
        self.w.write_event(Event::Start(Self::tag(name, attrs)))
    }

    fn end(&mut self, name: &str) -> io::Result<()> {
        self.w.write_event(Event::End(BytesEnd::new(name)))
    }

    fn empty(&mut self, name: &str, attrs: &[(&str, &str)]) -> io::Result<()> {
        self.w.write_event(Event::Empty(Self::tag(name, attrs)))
    }

    fn text(&mut self, name: &str, attrs: &[(&str, &str)], text: &str) -> io::Result<()> {
        self.w.write_event(Event::Start(Self::tag(name, attrs)))?;
        self.w.write_event(Event::Text(BytesText::new(text)))?;
        self.w.write_event(Event::End(BytesEnd::new(name)))
    }

    /// The primary instance's elements. `template`: inside a repeat's
    /// template (or at the top): nested repeats get their `jr:template`.
    fn instance_nodes(&mut self, nodes: &[Node], template: bool) -> io::Result<()> {
        for node in nodes {
            let name = node.name.as_str();
            match &node.kind {
                Kind::Group { children, toggle } => {
                    if *toggle {
                        self.empty(&format!("{name}{PRESENT_SUFFIX}"), &[])?;
                    }
                    self.start(name, &[])?;
                    self.instance_nodes(children, template)?;
                    self.end(name)?;
                }
                Kind::Repeat { children, min, max } => {
                    if template {
                        self.start(name, &[("jr:template", "")])?;
                        self.instance_nodes(children, true)?;
                        self.end(name)?;
                    }
                    // `minItems` items are there from the start (brief §6).
                    for _ in 0..*min {
                        self.start(name, &[])?;
                        self.instance_nodes(children, false)?;
                        self.end(name)?;
                    }
                    if *min > 0 || max.is_some() {
                        self.empty(&format!("{name}{COUNT_SUFFIX}"), &[])?;
                    }
                }
                Kind::List { min, max, .. } => {
                    if template {
                        self.start(name, &[("jr:template", "")])?;
                        self.empty(LIST_VALUE, &[])?;
                        self.end(name)?;
                    }
                    for _ in 0..*min {
                        self.start(name, &[])?;
                        self.empty(LIST_VALUE, &[])?;
                        self.end(name)?;
                    }
                    if *min > 0 || max.is_some() {
                        self.empty(&format!("{name}{COUNT_SUFFIX}"), &[])?;
                    }
                }
                Kind::Question { unknown, .. } => {
                    if unknown.is_some() {
                        self.empty(&format!("{name}{KNOWN_SUFFIX}"), &[])?;
                    }
                    self.empty(name, &[])?;
                }
                Kind::Hidden { .. } => self.empty(name, &[])?,
            }
        }
        Ok(())
    }

    /// `meta`: the instance's identity and the case it is about.
    fn meta(&mut self) -> io::Result<()> {
        self.start("meta", &[])?;
        for name in ["instanceID", "timeStart", "timeEnd", "deviceID"] {
            self.empty(name, &[])?;
        }
        // The case the form is about, and the entity of the phone's case
        // list it makes or changes (ODK Entities 2024.1: Collect keeps the
        // list offline and sends `meta/entity`).
        match self.table.meta.case {
            CaseRole::Opens => {
                self.empty(CASE_ID, &[])?;
                self.start(
                    "entity",
                    &[("dataset", DATASET), ("id", ""), ("create", "1")],
                )?;
                self.empty("label", &[])?;
                self.end("entity")?;
            }
            CaseRole::Updates => {
                self.empty(CASE_ID, &[])?;
                self.empty(BASE_CASE_VERSION, &[])?;
                self.empty(
                    "entity",
                    &[
                        ("dataset", DATASET),
                        ("id", ""),
                        ("update", "1"),
                        ("baseVersion", ""),
                        ("trunkVersion", ""),
                        ("branchId", ""),
                    ],
                )?;
            }
            CaseRole::None => {}
        }
        self.end("meta")
    }

    fn meta_binds(&mut self) -> io::Result<()> {
        let b = |name: &str| format!("/data/meta/{name}");
        self.empty(
            "bind",
            &[
                ("nodeset", &b("instanceID")),
                ("type", "string"),
                ("readonly", "true()"),
                ("jr:preload", "uid"),
            ],
        )?;
        for (name, param) in [("timeStart", "start"), ("timeEnd", "end")] {
            self.empty(
                "bind",
                &[
                    ("nodeset", &b(name)),
                    ("type", "dateTime"),
                    ("jr:preload", "timestamp"),
                    ("jr:preloadParams", param),
                ],
            )?;
        }
        self.empty(
            "bind",
            &[
                ("nodeset", &b("deviceID")),
                ("type", "string"),
                ("jr:preload", "property"),
                ("jr:preloadParams", "deviceid"),
            ],
        )?;
        let calculated = |o: &mut Self, path: &str, ty: &str, calculate: &str| {
            o.empty(
                "bind",
                &[
                    ("nodeset", path),
                    ("type", ty),
                    ("readonly", "true()"),
                    ("calculate", calculate),
                ],
            )
        };
        let case_id = b(CASE_ID);
        let entity = |attr: &str| format!("/data/meta/entity/{attr}");
        match self.table.meta.case {
            // A form that opens a case names the new case on the phone, and
            // the entity is that case, under a label that names no one.
            CaseRole::Opens => {
                calculated(self, &case_id, "string", "once(uuid())")?;
                calculated(self, &entity("@id"), "string", &case_id)?;
                calculated(self, &entity("label"), "string", OPENED_LABEL)?;
            }
            // A follow-up: the worker picks the case from the list; its
            // version there is the version the answers were made against.
            CaseRole::Updates => {
                self.empty(
                    "bind",
                    &[
                        ("nodeset", &case_id),
                        ("type", "string"),
                        ("required", "true()"),
                    ],
                )?;
                let column = |name: &str| {
                    format!("instance('{DATASET}')/root/item[name = {case_id}]/{name}")
                };
                calculated(self, &b(BASE_CASE_VERSION), "int", &column("__version"))?;
                calculated(self, &entity("@id"), "string", &case_id)?;
                calculated(
                    self,
                    &entity("@baseVersion"),
                    "string",
                    &column("__version"),
                )?;
                calculated(
                    self,
                    &entity("@trunkVersion"),
                    "string",
                    &column("__trunkVersion"),
                )?;
                calculated(self, &entity("@branchId"), "string", &column("__branchId"))?;
            }
            CaseRole::None => {}
        }
        Ok(())
    }

    /// The question of a follow-up that names its case: one of the
    /// worker's cases, from the case list on the phone.
    fn case_picker(&mut self) -> io::Result<()> {
        let path = format!("/data/meta/{CASE_ID}");
        self.start("select1", &[("ref", &path)])?;
        self.text("label", &[], "Which case is this about?")?;
        self.text("hint", &[], "Your cases, by case number")?;
        let nodeset = format!("instance('{DATASET}')/root/item");
        self.start("itemset", &[("nodeset", &nodeset)])?;
        self.empty("value", &[("ref", "name")])?;
        self.empty("label", &[("ref", "label")])?;
        self.end("itemset")?;
        self.end("select1")
    }

    fn choice_list(&mut self, list: &ChoiceList) -> io::Result<()> {
        self.start("instance", &[("id", list.id.as_str())])?;
        self.start("root", &[])?;
        for (value, label) in &list.items {
            self.start("item", &[])?;
            self.text("name", &[], value)?;
            self.text("label", &[], label)?;
            self.end("item")?;
        }
        self.end("root")?;
        self.end("instance")
    }

    /// `<itext>` when any field carries `x-labels`: one translation per
    /// language, falling back to the title, plus "default" (the titles).
    fn itext(&mut self) -> io::Result<()> {
        if self.langs.is_empty() {
            return Ok(());
        }
        let mut texts = Vec::new();
        collect_texts(&self.table.nodes, "/data", &mut texts);
        self.start("itext", &[])?;
        let mut all = vec!["default".to_string()];
        all.extend(self.langs.iter().cloned());
        for lang in &all {
            let mut attrs = vec![("lang", lang.as_str())];
            if lang == "default" {
                attrs.push(("default", "true()"));
            }
            self.start("translation", &attrs)?;
            for (id, node) in &texts {
                let label = node
                    .translations
                    .iter()
                    .find(|(l, _)| l == lang)
                    .map(|(_, t)| t.as_str())
                    .unwrap_or(&node.label);
                self.start("text", &[("id", &label_id(id))])?;
                self.text("value", &[], label)?;
                self.end("text")?;
            }
            self.end("translation")?;
        }
        self.end("itext")
    }

    fn label(&mut self, path: &str, node: &Node) -> io::Result<()> {
        if self.langs.is_empty() {
            self.text("label", &[], &node.label)?;
        } else {
            let reference = format!("jr:itext('{}')", label_id(path));
            self.empty("label", &[("ref", &reference)])?;
        }
        if let Some(hint) = &node.hint {
            self.text("hint", &[], hint)?;
        }
        Ok(())
    }

    /// A choice question on `path`; its label is `label` as plain text,
    /// or else the label of `node` (whose own path is `label_at`).
    #[allow(clippy::too_many_arguments)]
    fn select(
        &mut self,
        control: &str,
        path: &str,
        list: &str,
        node: &Node,
        label_at: &str,
        label: Option<&str>,
    ) -> io::Result<()> {
        self.start(control, &[("ref", path)])?;
        match label {
            Some(text) => self.text("label", &[], text)?,
            None => self.label(label_at, node)?,
        }
        let nodeset = format!("instance('{list}')/root/item");
        self.start("itemset", &[("nodeset", &nodeset)])?;
        self.empty("value", &[("ref", "name")])?;
        self.empty("label", &[("ref", "label")])?;
        self.end("itemset")?;
        self.end(control)
    }

    fn question(&mut self, path: &str, leaf: &Leaf, node: &Node) -> io::Result<()> {
        match leaf {
            Leaf::Boolean => self.select("select1", path, YES_NO_LIST, node, path, None),
            Leaf::One(list) => self.select("select1", path, list, node, path, None),
            Leaf::Many(list) => self.select("select", path, list, node, path, None),
            Leaf::Upload { mediatype } => {
                self.start("upload", &[("ref", path), ("mediatype", mediatype)])?;
                self.label(path, node)?;
                self.end("upload")
            }
            Leaf::Text | Leaf::Date | Leaf::DateTime | Leaf::Integer | Leaf::Decimal => {
                self.start("input", &[("ref", path)])?;
                self.label(path, node)?;
                self.end("input")
            }
        }
    }

    fn controls(&mut self, nodes: &[Node], parent: &str) -> io::Result<()> {
        for node in nodes {
            let path = format!("{parent}/{}", node.name);
            match &node.kind {
                Kind::Group { children, toggle } => {
                    if *toggle {
                        let present = format!("{path}{PRESENT_SUFFIX}");
                        let ask = format!("Fill in \"{}\"?", node.label);
                        self.select("select1", &present, YES_NO_LIST, node, &path, Some(&ask))?;
                    }
                    self.start("group", &[("ref", &path)])?;
                    self.label(&path, node)?;
                    self.controls(children, &path)?;
                    self.end("group")?;
                }
                Kind::Repeat { children, .. } => {
                    self.start("group", &[("ref", &path)])?;
                    self.label(&path, node)?;
                    self.start("repeat", &[("nodeset", &path)])?;
                    self.controls(children, &path)?;
                    self.end("repeat")?;
                    self.end("group")?;
                }
                Kind::List { value, .. } => {
                    self.start("group", &[("ref", &path)])?;
                    self.label(&path, node)?;
                    self.start("repeat", &[("nodeset", &path)])?;
                    let inner = format!("{path}/{LIST_VALUE}");
                    self.question(&inner, value, node)?;
                    self.end("repeat")?;
                    self.end("group")?;
                }
                Kind::Question { leaf, unknown, .. } => {
                    if let Some(alt) = unknown {
                        let known = format!("{path}{KNOWN_SUFFIX}");
                        self.select("select1", &known, &alt.list, node, &path, None)?;
                    }
                    self.question(&path, leaf, node)?;
                }
                Kind::Hidden { .. } => {}
            }
        }
        Ok(())
    }
}

fn collect_texts<'a>(nodes: &'a [Node], parent: &str, out: &mut Vec<(String, &'a Node)>) {
    for node in nodes {
        let path = format!("{parent}/{}", node.name);
        out.push((path.clone(), node));
        match &node.kind {
            Kind::Group { children, .. } | Kind::Repeat { children, .. } => {
                collect_texts(children, &path, out)
            }
            Kind::List { .. } => out.push((format!("{path}/{LIST_VALUE}"), node)),
            _ => {}
        }
    }
}

/// `meta/case_id`: the case the instance is about (envelope `case_id`).
pub const CASE_ID: &str = "case_id";
/// `meta/base_case_version`: the case version an update was made against.
pub const BASE_CASE_VERSION: &str = "base_case_version";
/// The entity list of a programme's cases (`meta/entity/@dataset`), served
/// as `cases.csv` in the manifest of every follow-up form.
pub const DATASET: &str = "cases";
/// The ODK Entities version the forms declare: offline entities (Collect
/// 2024.3 and later keep creations and updates on the phone until sent).
pub const ENTITIES_VERSION: &str = "2024.1.0";
const ENTITIES: &str = "http://www.opendatakit.org/xforms/entities";
/// The label a new case has on the phone until the server's list names it
/// by its case number: it names no one (docs/security.md).
const OPENED_LABEL: &str = "concat('New case, opened ', today())";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const KEY: &[u8] = b"\x30\x82 not a real key, the generator only encodes it";

    fn form(properties: Value, required: &[&str]) -> Value {
        json!({
            "title": "T",
            "x-form": {"id": "kz.t", "programme": "kz", "version": "1", "source": "s",
                       "case": "updates", "event": "e", "occurred_at": "/d"},
            "type": "object", "required": required, "properties": properties
        })
    }

    fn xml(properties: Value) -> String {
        String::from_utf8(generate(&form(properties, &[]), KEY).unwrap()).unwrap()
    }

    #[test]
    fn every_shipped_form_version_has_an_xform() {
        let set = crate::forms::definitions::shipped();
        let compiled: Vec<_> = set
            .forms
            .iter()
            .map(|file| crate::forms::check::check(&file.document, &set.resources).unwrap())
            .collect();
        let mut problems = Vec::new();
        let started = std::time::Instant::now();
        for form in &compiled {
            if let Err(mut p) = generate(&form.document, KEY) {
                problems.append(&mut p);
            }
        }
        // A figure for the record (no bound is asserted): `cargo bench --bench odk`.
        println!(
            "generated {} XForms in {:.1} ms",
            compiled.len(),
            started.elapsed().as_secs_f64() * 1000.0
        );
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    #[test]
    fn the_skeleton_is_what_pyxform_writes_with_the_key() {
        let x = xml(json!({
            "d": {"type": "string", "format": "date", "x-pii": "quasi", "x-fact": "a.b"},
            "faith": {"type": "string", "enum": ["islam", "other"]}
        }));
        for part in [
            "xmlns:jr=\"http://openrosa.org/javarosa\"",
            "xmlns:odk=\"http://www.opendatakit.org/xforms\"",
            "xmlns:orx=\"http://openrosa.org/xforms\"",
            // A follow-up: it also declares ODK Entities.
            "<model odk:xforms-version=\"1.0.0\" entities:entities-version=\"2024.1.0\">",
            "<data id=\"kz.t\" version=\"1\">",
            "<bind nodeset=\"/data/meta/instanceID\" type=\"string\" readonly=\"true()\" jr:preload=\"uid\"/>",
            "<bind nodeset=\"/data/d\" type=\"date\"/>",
            "<case_id/>",
            "<base_case_version/>",
            "<itemset nodeset=\"instance('faith')/root/item\">",
            "<name>islam</name>",
        ] {
            assert!(x.contains(part), "{part} missing from\n{x}");
        }
        let key = base64::engine::general_purpose::STANDARD.encode(KEY);
        assert!(x.contains(&format!(
            "<submission method=\"post\" base64RsaPublicKey=\"{key}\"/>"
        )));
        // Privacy classes stay on the server.
        assert!(!x.contains("pii") && !x.contains("quasi") && !x.contains("a.b"));
    }

    #[test]
    fn relevance_inside_repeats_is_relative_and_unknown_unions_are_a_pair() {
        let x = xml(json!({
            "has": {"type": "boolean"},
            "dob": {"anyOf": [{"type": "string", "format": "date"}, {"const": "unknown", "title": "Not known"}]},
            "kids": {"type": "array", "maxItems": 5, "minItems": 1, "x-relevant": {"field": "0/has", "eq": true},
                "items": {"type": "object", "required": ["kind"], "properties": {
                    "kind": {"type": "string", "oneOf": [{"const": "a", "title": "A & B"}, {"const": "o"}]},
                    "other": {"type": "string", "maxLength": 9, "x-relevant": {"field": "0/kind", "eq": "o"}},
                    "older": {"type": "boolean", "x-relevant": {"field": "/dob", "lt": "2010-01-01"}}
                }}}
        }));
        for part in [
            "<bind nodeset=\"/data/kids\" relevant=\"/data/has = 'true'\"/>",
            "<bind nodeset=\"/data/kids/other\" type=\"string\" relevant=\"../kind = 'o'\" constraint=\"string-length(.) &lt;= 9\"/>",
            "relevant=\"if(/data/dob__known = 'unknown', 'unknown', /data/dob) &lt; date('2010-01-01')\"",
            "<bind nodeset=\"/data/dob\" type=\"date\" relevant=\"../dob__known = 'known'\"/>",
            "<bind nodeset=\"/data/kids__count\" type=\"int\" relevant=\"/data/has = 'true'\" constraint=\"(. &gt;= 1) and (. &lt;= 5)\" calculate=\"count(../kids)\" readonly=\"true()\"/>",
            "<kids jr:template=\"\">",
            "<label>A &amp; B</label>",
            "<label>Not known</label>",
        ] {
            assert!(x.contains(part), "{part} missing from\n{x}");
        }
    }

    #[test]
    fn a_required_repeat_needs_an_item_as_a_required_question_needs_an_answer() {
        let f = form(
            json!({
                "acts": {"type": "array", "maxItems": 9, "items": {"type": "object",
                    "properties": {"a": {"type": "string"}}}},
                "phones": {"type": "array", "items": {"type": "string"}},
                "spare": {"type": "array", "maxItems": 9, "items": {"type": "object",
                    "properties": {"a": {"type": "string"}}}}
            }),
            &["acts", "phones"],
        );
        let x = String::from_utf8(generate(&f, KEY).unwrap()).unwrap();
        for part in [
            "</acts>\n          <acts>\n            <a/>\n          </acts>\n          <acts__count/>",
            "<bind nodeset=\"/data/acts__count\" type=\"int\" constraint=\"(. &gt;= 1) and (. &lt;= 9)\"",
            "<bind nodeset=\"/data/phones__count\" type=\"int\" constraint=\". &gt;= 1\"",
            "<bind nodeset=\"/data/spare__count\" type=\"int\" constraint=\". &lt;= 9\"",
        ] {
            assert!(x.contains(part), "{part} missing from\n{x}");
        }
    }

    #[test]
    fn what_a_phone_cannot_ask_is_refused_with_its_place() {
        let cases = [
            (
                json!({"n": {"type": "number", "multipleOf": 2}}),
                "/properties/n/multipleOf",
            ),
            (
                json!({"s": {"type": "string", "minLength": 2}}),
                "/properties/s/minLength",
            ),
            (
                json!({"a": {"type": "array", "maxItems": 2, "items": {"type": "string", "oneOf": [{"const": "x"}]},
                          "if": {"minItems": 2}, "then": {"maxItems": 1}}}),
                "/properties/a/if",
            ),
            (
                json!({"o": {"type": "object", "properties": {"p": {"type": "string"}},
                          "if": {"required": ["p"]}, "then": {"required": ["q"]}}}),
                "/properties/o/if",
            ),
            (
                json!({"v": {"type": "string", "oneOf": [{"const": "two words"}]}}),
                "/properties/v/oneOf/0/const",
            ),
            (
                json!({"bad name": {"type": "string"}}),
                "/properties/bad name",
            ),
            (
                json!({"x": {"type": "string", "x-relevant": {"field": "/nowhere", "eq": "a"}}}),
                "/properties/x/x-relevant",
            ),
        ];
        for (properties, pointer) in cases {
            let problems = generate(&form(properties.clone(), &[]), KEY).unwrap_err();
            assert!(
                problems
                    .iter()
                    .any(|p| p.starts_with("kz.t 1: ") && p.contains(pointer)),
                "{properties}: {problems:?}"
            );
        }
    }

    #[test]
    fn forms_about_a_case_make_or_pick_an_entity_of_the_case_list() {
        let follow_up = xml(json!({"d": {"type": "string", "format": "date"}}));
        for part in [
            "xmlns:entities=\"http://www.opendatakit.org/xforms/entities\"",
            "entities:entities-version=\"2024.1.0\"",
            "<entity dataset=\"cases\" id=\"\" update=\"1\" baseVersion=\"\" trunkVersion=\"\" branchId=\"\"/>",
            "<instance id=\"cases\" src=\"jr://file-csv/cases.csv\"/>",
            "<bind nodeset=\"/data/meta/case_id\" type=\"string\" required=\"true()\"/>",
            "calculate=\"instance('cases')/root/item[name = /data/meta/case_id]/__version\"",
            "<bind nodeset=\"/data/meta/entity/@id\" type=\"string\" readonly=\"true()\" calculate=\"/data/meta/case_id\"/>",
            "<select1 ref=\"/data/meta/case_id\">",
        ] {
            assert!(follow_up.contains(part), "{part} missing from\n{follow_up}");
        }
        let mut opening = form(json!({"d": {"type": "string", "format": "date"}}), &[]);
        opening["x-form"]["case"] = json!("opens");
        let opening = String::from_utf8(generate(&opening, KEY).unwrap()).unwrap();
        for part in [
            "<entity dataset=\"cases\" id=\"\" create=\"1\">",
            "calculate=\"once(uuid())\"",
            "calculate=\"concat('New case, opened ', today())\"",
        ] {
            assert!(opening.contains(part), "{part} missing from\n{opening}");
        }
        assert!(!opening.contains("jr://file-csv"));
        // A choice list called "cases" would hide the case list.
        let clash = form(
            json!({"cases": {"type": "string", "enum": ["a", "b"]}}),
            &[],
        );
        let problems = generate(&clash, KEY).unwrap_err();
        assert!(problems[0].contains("case list"), "{problems:?}");
    }

    #[test]
    fn the_same_form_and_key_give_the_same_bytes() {
        let f = form(json!({"d": {"type": "string", "format": "date"}}), &["d"]);
        assert_eq!(generate(&f, KEY).unwrap(), generate(&f, KEY).unwrap());
        assert_ne!(generate(&f, KEY).unwrap(), generate(&f, b"other").unwrap());
    }
}
