//! The rules of each programme, read from `form-definitions/<p>/programme.json`
//! (see docs/programmes.md): case numbering, calendar, workflow states and
//! transitions, approvals and deadline rules. Checked once at start against
//! the shipped forms' events and facts, so a typo fails loudly instead of
//! silently never matching.

pub mod calendar;
pub mod holidays;
pub mod indicators;
pub mod retention;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use chrono::NaiveDate;
use serde::Deserialize;
use serde_json::Value;

use crate::forms::bundle;
use crate::forms::definitions::DefinitionSet;
use crate::forms::model::{self, CaseRole, FieldKind, Pii};
use crate::forms::relevance::{Predicate, Reference};
pub use calendar::{Calendar, Limit, Moment};

crate::ids::string_id! {
    /// A programme: `kz` or `bt`.
    ProgrammeId
}

/// A case fact named in a condition: `{"fact": "risk_level", "eq": "high"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FactRef(pub String);

impl Reference for FactRef {
    const KEY: &'static str = "fact";
    fn parse(text: &str) -> Result<FactRef, String> {
        if text.is_empty() {
            return Err("a fact name is empty".into());
        }
        Ok(FactRef(text.to_string()))
    }
}

pub type Condition = Predicate<FactRef>;

/// Facts staff actions set, beside the forms' `x-fact`s.
pub const ACTION_FACTS: [&str; 1] = ["case.assigned_to"];
pub const CASE_ASSIGNED: &str = "case_assigned";
/// `met_by: ["dated:F"]`: each answer of the date fact F (a repeat group's
/// list of dated steps, such as the monthly placement reviews) is an event
/// of its own on its date, named `dated:F`.
pub const DATED_PREFIX: &str = "dated:";
pub const CONFLICT_RESOLVED: &str = "conflict_resolved";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberScheme {
    /// KZ: per site `1`, `2`, …; readmissions `1.1`, `1.2`.
    KzSiteSequence,
    /// BT: `NNN-DDMM-YY-ORG-II`.
    BtCaseCode,
}

#[derive(Debug, Clone, PartialEq)]
pub struct State {
    pub id: String,
    pub title: String,
    pub closed: bool,
    pub source: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Approval {
    pub subject: String,
    pub title: String,
    pub source: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// `None`: after any event.
    pub on: Option<String>,
    pub from: Option<Vec<String>>,
    pub when: Option<Condition>,
    pub to: String,
    pub source: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Start {
    Event(String),
    State(String),
    Fact(String),
    Condition(Condition),
    LatestOf(Vec<Start>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum LimitRule {
    Fixed(Limit),
    /// The limit depends on a fact's value; values not listed: no deadline.
    ByFact {
        fact: String,
        values: Vec<(Value, Limit)>,
    },
}

impl LimitRule {
    pub fn for_facts(&self, facts: &HashMap<String, Value>) -> Option<Limit> {
        match self {
            LimitRule::Fixed(limit) => Some(*limit),
            LimitRule::ByFact { fact, values } => {
                let actual = facts.get(fact)?;
                values
                    .iter()
                    .find(|(v, _)| v == actual)
                    .map(|(_, limit)| *limit)
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeadlineRule {
    pub id: String,
    pub title: String,
    pub start: Start,
    pub when: Option<Condition>,
    pub limit: LimitRule,
    pub met_by: Vec<String>,
    pub met_when: Option<Condition>,
    /// The meeting happened at this fact's value (a time written in the
    /// form), not when the form's event did.
    pub met_at: Option<String>,
    pub every: bool,
    /// The clock starts at this fact's value (a date or time the form
    /// records), not when the start fired: post-discharge checks count from
    /// the discharge date, though the case enters monitoring at approval.
    pub start_at: Option<String>,
    /// The limit is extended by this fact's number of hours (travel time).
    pub plus_hours: Option<String>,
    /// Event and fact starts fire on every occurrence (while none is open),
    /// not once per case.
    pub each: bool,
    pub while_state: Option<Vec<String>>,
    pub after_closure: bool,
    pub responsible: String,
    pub due_soon: Limit,
    pub source: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Programme {
    pub id: String,
    pub title: String,
    pub case_number: NumberScheme,
    /// As shipped; holidays edited in the database are added on top.
    pub calendar: Calendar,
    /// The shipped holidays with their names, to seed the editable list.
    pub holidays: Vec<(NaiveDate, String)>,
    pub due_soon: Limit,
    pub states: Vec<State>,
    pub initial_state: String,
    pub approvals: Vec<Approval>,
    pub transitions: Vec<Transition>,
    pub deadlines: Vec<DeadlineRule>,
    /// Which event goes first when two happened at the same moment: the
    /// case-opening event, then workflow order (first mention in the
    /// transitions), then the rest.
    pub event_rank: HashMap<String, usize>,
    pub indicators: indicators::Indicators,
    /// How long closed case files are kept (absent: no rule, kept).
    pub retention: Option<retention::Retention>,
    /// The columns of the phone's case list besides id, label (the case
    /// number) and version: each one of [`ON_PHONE_COLUMNS`].
    pub on_phone: Vec<String>,
    /// The date facts whose every answer is a `dated:` event of its own.
    pub dated_facts: Vec<String>,
}

/// What `on_phone` may list: what the worker's own case file holds and the
/// sync feed already sends, and nothing about the child.
pub const ON_PHONE_COLUMNS: [&str; 2] = ["state", "opened_on"];

impl Programme {
    pub fn state(&self, id: &str) -> Option<&State> {
        self.states.iter().find(|s| s.id == id)
    }

    pub fn is_closed_state(&self, id: &str) -> bool {
        self.state(id).is_some_and(|s| s.closed)
    }

    pub fn rule(&self, id: &str) -> Option<&DeadlineRule> {
        self.deadlines.iter().find(|r| r.id == id)
    }

    pub fn rank(&self, event: &str) -> usize {
        self.event_rank.get(event).copied().unwrap_or(usize::MAX)
    }
}

/// The events and facts the shipped forms define: what rules may name.
#[derive(Debug, Default, Clone)]
pub struct Vocabulary {
    /// Programme → its forms' events.
    pub events: HashMap<String, BTreeSet<String>>,
    /// Programme → the event of its case-opening form.
    pub opening_events: HashMap<String, BTreeSet<String>>,
    pub facts: BTreeSet<String>,
    /// Fact → how private its answers are (the strictest of the fields
    /// setting it) and the kind of those fields.
    pub fact_kinds: HashMap<String, (Option<Pii>, FieldKind)>,
    /// Programme → the facts its forms set.
    pub programme_facts: HashMap<String, BTreeSet<String>>,
}

impl Vocabulary {
    pub fn of(set: &DefinitionSet) -> Vocabulary {
        let mut vocabulary = Vocabulary::default();
        for file in &set.forms {
            let Ok(bundled) = bundle::bundle(&file.document, &set.resources) else {
                continue;
            };
            let Ok(meta) = model::meta(&bundled) else {
                continue;
            };
            vocabulary
                .events
                .entry(meta.programme.clone())
                .or_default()
                .insert(meta.event.clone());
            if meta.case == CaseRole::Opens {
                vocabulary
                    .opening_events
                    .entry(meta.programme.clone())
                    .or_default()
                    .insert(meta.event.clone());
            }
            for field in model::fields(&bundled) {
                if let Some(fact) = field.fact {
                    let entry = vocabulary
                        .fact_kinds
                        .entry(fact.clone())
                        .or_insert((field.pii, field.kind));
                    entry.0 = match (entry.0, field.pii) {
                        (Some(Pii::Direct), _) | (_, Some(Pii::Direct)) => Some(Pii::Direct),
                        (Some(Pii::Quasi), _) | (_, Some(Pii::Quasi)) => Some(Pii::Quasi),
                        _ => None,
                    };
                    vocabulary
                        .programme_facts
                        .entry(meta.programme.clone())
                        .or_default()
                        .insert(fact.clone());
                    vocabulary.facts.insert(fact);
                }
            }
        }
        vocabulary.facts.extend(ACTION_FACTS.map(String::from));
        vocabulary
    }
}

/// Every programme's rules, by programme id.
#[derive(Debug, Clone, Default)]
pub struct Programmes {
    by_id: HashMap<String, Arc<Programme>>,
    vocabulary: Vocabulary,
}

impl Programmes {
    /// Reads and checks the `programme.json` files of `set`; `Err` lists
    /// every mistake with its file and JSON pointer.
    pub fn load(set: &DefinitionSet) -> Result<Programmes, Vec<String>> {
        let vocabulary = Vocabulary::of(set);
        let mut by_id = HashMap::new();
        let mut problems = Vec::new();
        for file in &set.programmes {
            match compile(&file.document, &vocabulary) {
                Ok(programme) => {
                    by_id.insert(programme.id.clone(), Arc::new(programme));
                }
                Err(list) => problems.extend(
                    list.into_iter()
                        .map(|p| format!("{}: {p}", file.path.display())),
                ),
            }
        }
        if problems.is_empty() {
            Ok(Programmes { by_id, vocabulary })
        } else {
            Err(problems)
        }
    }

    /// The rules shipped in this binary. They are checked by the test suite;
    /// a binary whose rules do not load is a build defect, so this panics.
    pub fn shipped() -> Arc<Programmes> {
        static SHIPPED: std::sync::OnceLock<Arc<Programmes>> = std::sync::OnceLock::new();
        SHIPPED
            .get_or_init(|| {
                let set = crate::forms::definitions::shipped();
                Arc::new(Programmes::load(&set).unwrap_or_else(|problems| {
                    panic!("the shipped programme rules are invalid: {problems:#?}")
                }))
            })
            .clone()
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Programme>> {
        self.by_id.get(id)
    }

    /// The events and facts of the shipped forms.
    pub fn vocabulary(&self) -> &Vocabulary {
        &self.vocabulary
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.by_id.keys().map(String::as_str)
    }
}

// The file as written; `compile` turns it into `Programme`.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProgramme {
    programme: String,
    title: String,
    #[serde(default)]
    source: String,
    case_number: RawNumber,
    calendar: RawCalendar,
    #[serde(default = "default_due_soon")]
    due_soon: String,
    #[serde(default)]
    conflict_rule: Option<String>,
    states: Vec<RawState>,
    initial_state: String,
    #[serde(default)]
    approvals: Vec<RawApproval>,
    transitions: Vec<RawTransition>,
    deadlines: Vec<RawDeadline>,
    #[serde(default)]
    not_modelled: Vec<Value>,
    // Indicators (docs/indicators.md): see `indicators::compile`.
    #[serde(default)]
    age_bands: Vec<Value>,
    #[serde(default)]
    disaggregations: Value,
    #[serde(default)]
    indicators: Vec<Value>,
    #[serde(default)]
    not_computable: Vec<Value>,
    // Closed-file retention: see `retention::compile`.
    #[serde(default)]
    retention: Option<Value>,
    /// What the case list on a worker's phone shows of each case besides
    /// its number (docs/odk.md, "Cases on the phone").
    #[serde(default)]
    on_phone: Vec<String>,
}

fn default_due_soon() -> String {
    "24h".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNumber {
    scheme: String,
    #[serde(default)]
    source: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCalendar {
    time_zone: String,
    weekend: Vec<String>,
    #[serde(default)]
    holidays: Vec<RawHoliday>,
    /// Weekend days worked by decree (a holiday moved onto a Monday).
    #[serde(default)]
    working_days: Vec<RawHoliday>,
    /// Where each year's list comes from (year → decree, order or law).
    /// When given, every year with a holiday or working day needs one.
    #[serde(default)]
    sources: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    source: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHoliday {
    date: NaiveDate,
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    id: String,
    title: String,
    #[serde(default)]
    closed: bool,
    #[serde(default)]
    source: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApproval {
    subject: String,
    title: String,
    #[serde(default)]
    source: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTransition {
    on: String,
    #[serde(default)]
    from: Option<Vec<String>>,
    #[serde(default)]
    when: Option<Value>,
    to: String,
    #[serde(default)]
    source: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeadline {
    id: String,
    title: String,
    start: Value,
    #[serde(default)]
    when: Option<Value>,
    limit: Value,
    met_by: Vec<String>,
    #[serde(default)]
    met_when: Option<Value>,
    #[serde(default)]
    met_at: Option<Value>,
    #[serde(default)]
    start_at: Option<Value>,
    #[serde(default)]
    plus_hours: Option<Value>,
    #[serde(default)]
    each: bool,
    #[serde(default)]
    every: bool,
    #[serde(default)]
    while_state: Option<Vec<String>>,
    #[serde(default)]
    after_closure: bool,
    #[serde(default = "default_responsible")]
    responsible: String,
    #[serde(default)]
    due_soon: Option<String>,
    source: String,
}

fn default_responsible() -> String {
    "field_worker".into()
}

/// Collects problems with their JSON pointer while compiling.
struct Checker<'a> {
    vocabulary: &'a Vocabulary,
    programme: String,
    states: HashSet<String>,
    events: HashSet<String>,
    problems: Vec<String>,
}

impl Checker<'_> {
    fn problem(&mut self, at: String, what: impl Into<String>) {
        self.problems.push(format!("{at}: {}", what.into()));
    }

    fn state(&mut self, at: String, id: &str) {
        if !self.states.contains(id) {
            self.problem(at, format!("unknown state {id:?}"));
        }
    }

    fn event(&mut self, at: String, name: &str) {
        if !self.events.contains(name) {
            self.problem(
                at,
                format!(
                    "unknown event {name:?} (not the event of a {} form, nor a staff action)",
                    self.programme
                ),
            );
        }
    }

    fn fact(&mut self, at: String, name: &str) {
        if !self.vocabulary.facts.contains(name) {
            self.problem(at, format!("unknown fact {name:?} (no form sets it)"));
        }
    }

    fn condition(&mut self, at: String, raw: &Value) -> Option<Condition> {
        match Condition::parse(raw) {
            Ok(c) => {
                for fact in c.refs() {
                    self.fact(at.clone(), &fact.0);
                }
                Some(c)
            }
            Err(why) => {
                self.problem(at, why);
                None
            }
        }
    }

    /// `{"fact": F}`, checked.
    fn fact_ref(&mut self, at: String, raw: Option<&Value>) -> Option<String> {
        let raw = raw?;
        match raw.get("fact").and_then(Value::as_str) {
            Some(fact) if raw.as_object().is_some_and(|m| m.len() == 1) => {
                self.fact(format!("{at}/fact"), fact);
                Some(fact.to_string())
            }
            _ => {
                self.problem(at, "is {\"fact\": F}");
                None
            }
        }
    }

    fn limit(&mut self, at: String, text: &str) -> Option<Limit> {
        match Limit::parse(text) {
            Ok(l) => Some(l),
            Err(why) => {
                self.problem(at, why);
                None
            }
        }
    }

    fn start(&mut self, at: String, raw: &Value) -> Option<Start> {
        let Some(map) = raw.as_object().filter(|m| m.len() == 1) else {
            self.problem(
                at,
                "a start is one of {\"event\"}, {\"state\"}, {\"fact\"}, {\"condition\"}, {\"latest_of\"}",
            );
            return None;
        };
        let (key, value) = map.iter().next().expect("one entry");
        let text = value.as_str();
        let at = format!("{at}/{key}");
        match (key.as_str(), text) {
            ("event", Some(name)) => {
                self.event(at, name);
                Some(Start::Event(name.into()))
            }
            ("state", Some(id)) => {
                self.state(at, id);
                Some(Start::State(id.into()))
            }
            ("fact", Some(name)) => {
                self.fact(at, name);
                Some(Start::Fact(name.into()))
            }
            ("condition", _) => self.condition(at, value).map(Start::Condition),
            ("latest_of", _) => {
                let Some(items) = value.as_array().filter(|a| !a.is_empty()) else {
                    self.problem(at, "takes a non-empty list of starts");
                    return None;
                };
                let starts: Vec<Option<Start>> = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.start(format!("{at}/{i}"), item))
                    .collect();
                starts
                    .into_iter()
                    .collect::<Option<Vec<_>>>()
                    .map(Start::LatestOf)
            }
            _ => {
                self.problem(at, "unknown kind of start, or not a name");
                None
            }
        }
    }

    fn limit_rule(&mut self, at: String, raw: &Value) -> Option<LimitRule> {
        if let Some(text) = raw.as_str() {
            return self.limit(at, text).map(LimitRule::Fixed);
        }
        let fact = raw.get("by_fact").and_then(Value::as_str);
        let values = raw.get("values").and_then(Value::as_object);
        let (Some(fact), Some(values)) = (fact, values) else {
            self.problem(
                at,
                "a limit is \"48h\"-like or {\"by_fact\": F, \"values\": {value: limit}}",
            );
            return None;
        };
        self.fact(format!("{at}/by_fact"), fact);
        let mut out = Vec::new();
        for (value, limit) in values {
            let limit = limit
                .as_str()
                .and_then(|l| self.limit(format!("{at}/values/{value}"), l))?;
            // Fact values are JSON: booleans and numbers as themselves.
            let key = serde_json::from_str::<Value>(value)
                .ok()
                .filter(|v| !v.is_string() && !v.is_object() && !v.is_array())
                .unwrap_or_else(|| Value::String(value.clone()));
            out.push((key, limit));
        }
        Some(LimitRule::ByFact {
            fact: fact.into(),
            values: out,
        })
    }
}

/// Reads one programme file against `vocabulary` (tests build small ones).
pub fn compile(document: &Value, vocabulary: &Vocabulary) -> Result<Programme, Vec<String>> {
    let raw: RawProgramme = serde_json::from_value(document.clone())
        .map_err(|e| vec![format!("not a programme file: {e}")])?;
    let _ = (&raw.source, &raw.not_modelled);
    let mut events: HashSet<String> = vocabulary
        .events
        .get(&raw.programme)
        .map(|e| e.iter().cloned().collect())
        .unwrap_or_default();
    events.insert(CASE_ASSIGNED.into());
    events.insert(CONFLICT_RESOLVED.into());
    for a in &raw.approvals {
        events.insert(format!("{}_approved", a.subject));
        events.insert(format!("{}_returned", a.subject));
    }
    let mut c = Checker {
        vocabulary,
        programme: raw.programme.clone(),
        states: raw.states.iter().map(|s| s.id.clone()).collect(),
        events,
        problems: Vec::new(),
    };
    if !vocabulary.events.contains_key(&raw.programme) {
        c.problem(
            "/programme".into(),
            format!("no form of programme {:?}", raw.programme),
        );
    }
    let case_number = match raw.case_number.scheme.as_str() {
        "kz_site_sequence" => NumberScheme::KzSiteSequence,
        "bt_case_code" => NumberScheme::BtCaseCode,
        other => {
            c.problem(
                "/case_number/scheme".into(),
                format!("unknown scheme {other:?} (kz_site_sequence or bt_case_code)"),
            );
            NumberScheme::KzSiteSequence
        }
    };
    let _ = &raw.case_number.source;
    let time_zone = raw.calendar.time_zone.parse().unwrap_or_else(|_| {
        c.problem(
            "/calendar/time_zone".into(),
            format!("unknown time zone {:?}", raw.calendar.time_zone),
        );
        chrono_tz::UTC
    });
    let mut weekend = Vec::new();
    for (i, day) in raw.calendar.weekend.iter().enumerate() {
        match calendar::parse_weekday(day) {
            Ok(d) => weekend.push(d),
            Err(why) => c.problem(format!("/calendar/weekend/{i}"), why),
        }
    }
    let _ = &raw.calendar.source;
    if !raw.calendar.sources.is_empty() {
        for (key, text) in &raw.calendar.sources {
            if key.parse::<i32>().is_err() || text.trim().is_empty() {
                c.problem(
                    format!("/calendar/sources/{key}"),
                    "is a year with the source of its list",
                );
            }
        }
        let years: BTreeSet<i32> = raw
            .calendar
            .holidays
            .iter()
            .chain(&raw.calendar.working_days)
            .map(|h| chrono::Datelike::year(&h.date))
            .collect();
        for year in years {
            if !raw.calendar.sources.contains_key(&year.to_string()) {
                c.problem(
                    "/calendar/sources".into(),
                    format!("no source for the days of {year}"),
                );
            }
        }
    }
    let calendar = Calendar {
        time_zone,
        weekend,
        holidays: raw.calendar.holidays.iter().map(|h| h.date).collect(),
        working_days: raw.calendar.working_days.iter().map(|h| h.date).collect(),
    };
    let due_soon = c
        .limit("/due_soon".into(), &raw.due_soon)
        .unwrap_or(Limit::Hours(24));
    if let Some(rule) = raw.conflict_rule.as_deref() {
        if rule != "latest_occurred_at" {
            c.problem(
                "/conflict_rule".into(),
                format!("unknown rule {rule:?} (latest_occurred_at)"),
            );
        }
    }

    let mut seen = HashSet::new();
    for (i, s) in raw.states.iter().enumerate() {
        if !seen.insert(s.id.as_str()) {
            c.problem(format!("/states/{i}/id"), "a state is listed twice");
        }
    }
    if !raw.states.iter().any(|s| s.closed) {
        c.problem("/states".into(), "no state is marked \"closed\": true");
    }
    c.state("/initial_state".into(), &raw.initial_state);

    let mut transitions = Vec::new();
    for (i, t) in raw.transitions.iter().enumerate() {
        let at = |k: &str| format!("/transitions/{i}/{k}");
        let on = if t.on == "*" {
            None
        } else {
            c.event(at("on"), &t.on);
            Some(t.on.clone())
        };
        for (j, from) in t.from.iter().flatten().enumerate() {
            c.state(format!("/transitions/{i}/from/{j}"), from);
        }
        c.state(at("to"), &t.to);
        if on.is_none() && t.when.is_none() {
            c.problem(at("when"), "a transition on \"*\" needs a condition");
        }
        let when = t.when.as_ref().and_then(|w| c.condition(at("when"), w));
        transitions.push(Transition {
            on,
            from: t.from.clone(),
            when,
            to: t.to.clone(),
            source: t.source.clone(),
        });
    }

    let mut deadlines = Vec::new();
    let mut dated_facts: Vec<String> = Vec::new();
    let mut ids = HashSet::new();
    for (i, d) in raw.deadlines.iter().enumerate() {
        let at = |k: &str| format!("/deadlines/{i}/{k}");
        if !ids.insert(d.id.as_str()) {
            c.problem(at("id"), format!("deadline id {:?} is used twice", d.id));
        }
        let start = c.start(at("start"), &d.start);
        let when = d.when.as_ref().and_then(|w| c.condition(at("when"), w));
        let met_when = d
            .met_when
            .as_ref()
            .and_then(|w| c.condition(at("met_when"), w));
        let limit = c.limit_rule(at("limit"), &d.limit);
        let met_at = c.fact_ref(at("met_at"), d.met_at.as_ref());
        let start_at = c.fact_ref(at("start_at"), d.start_at.as_ref());
        let plus_hours = c.fact_ref(at("plus_hours"), d.plus_hours.as_ref());
        if d.met_by.is_empty() {
            c.problem(at("met_by"), "names no event");
        }
        for (j, e) in d.met_by.iter().enumerate() {
            match e.strip_prefix(DATED_PREFIX) {
                Some(fact) => {
                    c.fact(format!("/deadlines/{i}/met_by/{j}"), fact);
                    if !dated_facts.iter().any(|f| f == fact) {
                        dated_facts.push(fact.to_string());
                    }
                }
                None => c.event(format!("/deadlines/{i}/met_by/{j}"), e),
            }
        }
        for (j, s) in d.while_state.iter().flatten().enumerate() {
            c.state(format!("/deadlines/{i}/while_state/{j}"), s);
        }
        if !["field_worker", "coordinator"].contains(&d.responsible.as_str()) {
            c.problem(at("responsible"), "field_worker or coordinator");
        }
        let soon = match &d.due_soon {
            Some(text) => c.limit(at("due_soon"), text).unwrap_or(due_soon),
            None => due_soon,
        };
        if let (Some(start), Some(limit)) = (start, limit) {
            deadlines.push(DeadlineRule {
                id: d.id.clone(),
                title: d.title.clone(),
                start,
                when,
                limit,
                met_by: d.met_by.clone(),
                met_when,
                met_at,
                start_at,
                plus_hours,
                every: d.every,
                each: d.each,
                while_state: d.while_state.clone(),
                after_closure: d.after_closure,
                responsible: d.responsible.clone(),
                due_soon: soon,
                source: d.source.clone(),
            });
        }
    }

    let mut event_rank = HashMap::new();
    for opening in vocabulary
        .opening_events
        .get(&raw.programme)
        .into_iter()
        .flatten()
    {
        event_rank.insert(opening.clone(), 0);
    }
    for t in &transitions {
        if let Some(on) = &t.on {
            let next = event_rank.len() + 1;
            event_rank.entry(on.clone()).or_insert(next);
        }
    }
    // The assignment made when a worker opens a case goes with the opening.
    event_rank.entry(CASE_ASSIGNED.to_string()).or_insert(0);

    let indicators = indicators::compile(
        &mut c,
        &raw.age_bands,
        &raw.disaggregations,
        &raw.indicators,
        &raw.not_computable,
    );

    let retention = retention::compile(&mut c, raw.retention.as_ref());
    for (i, column) in raw.on_phone.iter().enumerate() {
        if !ON_PHONE_COLUMNS.contains(&column.as_str()) {
            c.problem(
                format!("/on_phone/{i}"),
                format!(
                    "{column:?} cannot be shown on the phone (one of: {})",
                    ON_PHONE_COLUMNS.join(", ")
                ),
            );
        } else if raw.on_phone[..i].contains(column) {
            c.problem(format!("/on_phone/{i}"), "listed twice");
        }
    }

    if !c.problems.is_empty() {
        return Err(c.problems);
    }
    Ok(Programme {
        indicators,
        retention,
        on_phone: raw.on_phone,
        dated_facts,
        id: raw.programme,
        title: raw.title,
        case_number,
        calendar,
        holidays: raw
            .calendar
            .holidays
            .into_iter()
            .map(|h| (h.date, h.name))
            .collect(),
        due_soon,
        states: raw
            .states
            .into_iter()
            .map(|s| State {
                id: s.id,
                title: s.title,
                closed: s.closed,
                source: s.source,
            })
            .collect(),
        initial_state: raw.initial_state,
        approvals: raw
            .approvals
            .into_iter()
            .map(|a| Approval {
                subject: a.subject,
                title: a.title,
                source: a.source,
            })
            .collect(),
        transitions,
        deadlines,
        event_rank,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_shipped_rules_load_for_both_programmes() {
        let set = crate::forms::definitions::shipped();
        let programmes = Programmes::load(&set).unwrap_or_else(|p| panic!("{p:#?}"));
        for id in ["kz", "bt"] {
            let p = programmes
                .get(id)
                .unwrap_or_else(|| panic!("{id} has no rules"));
            assert!(p.states.iter().any(|s| s.closed));
            assert!(!p.deadlines.is_empty());
            assert!(!p.calendar.holidays.is_empty());
        }
    }

    #[test]
    fn mistakes_are_reported_with_their_pointer() {
        let set = crate::forms::definitions::shipped();
        let vocabulary = Vocabulary::of(&set);
        let problems = compile(
            &json!({
                "programme": "kz", "title": "t",
                "case_number": {"scheme": "kz_numbers"},
                "calendar": {"time_zone": "Mars/Olympus", "weekend": ["saturday"]},
                "states": [{"id": "open", "title": "Open"}],
                "initial_state": "opened",
                "transitions": [{"on": "referal_received", "to": "closed"}],
                "deadlines": [{"id": "X", "title": "x", "start": {"fact": "no.such"},
                               "limit": "3 days", "met_by": ["nothing"], "source": "-"}],
                "on_phone": ["state", "child_name", "state"]
            }),
            &vocabulary,
        )
        .unwrap_err();
        for expected in [
            "/case_number/scheme",
            "/calendar/time_zone",
            "/calendar/weekend/0",
            "/initial_state",
            "/transitions/0/on",
            "/transitions/0/to",
            "/deadlines/0/start/fact",
            "/deadlines/0/limit",
            "/deadlines/0/met_by/0",
            "/states: no state is marked",
            "/on_phone/1: \"child_name\" cannot be shown on the phone",
            "/on_phone/2: listed twice",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(expected)),
                "{expected} not in {problems:#?}"
            );
        }
    }
}
