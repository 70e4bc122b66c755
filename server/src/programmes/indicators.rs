//! The monitoring indicators of a programme, as its `programme.json` states
//! them (docs/indicators.md): what each counts, in which period, broken
//! down how. Checked at start like the workflow rules, so an indicator that
//! names an unknown fact, event or breakdown fails loudly. The `indicators`
//! module counts them.

use serde::Deserialize;
use serde_json::Value;

use super::{Checker, Condition, Limit};

/// A band of ages in completed years, `to` inclusive (open-ended if absent).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgeBand {
    pub id: String,
    pub from: u32,
    #[serde(default)]
    pub to: Option<u32>,
}

impl AgeBand {
    pub fn holds(&self, age: u32) -> bool {
        age >= self.from && self.to.is_none_or(|to| age <= to)
    }
}

/// What a case is about that a report can be broken down by.
#[derive(Debug, Clone, PartialEq)]
pub enum Dimension {
    /// The case's value of a fact (a list: each of its values).
    Fact(String),
    /// The age band at the case's opening, from a date-of-birth fact.
    AgeFrom(String),
    /// A readmission: a coordinator linked the case to the child's earlier
    /// one (admission > 0), or the case's answers declare it (KZ 8.1.4:
    /// the intake's "reopened the child's file").
    Readmission(Option<Condition>),
    Site,
    Programme,
    /// A fact of the child's earlier case an indicator's `previous_case`
    /// found (empty for other indicators).
    PreviousCaseFact(String),
    /// A fact as the latest record of `event` answered it (KZ 5: the
    /// temporary placement's type, not the case's latest arrangement).
    EventFact {
        event: String,
        fact: String,
    },
    /// The days from one date fact of the latest record of `event` to
    /// another (or to the period's last day while unanswered), in bands
    /// (KZ 6, 8D: duration of placement).
    Duration {
        event: String,
        from: String,
        to: String,
        bands: Vec<AgeBand>,
    },
}

impl Dimension {
    /// The event whose latest record the breakdown reads.
    pub fn event(&self) -> Option<&str> {
        match self {
            Dimension::EventFact { event, .. } | Dimension::Duration { event, .. } => Some(event),
            _ => None,
        }
    }
}

impl Unit {
    /// As a report names it: `cases`, or `records of <event>`.
    pub fn name(&self) -> String {
        match self {
            Unit::Cases => "cases".into(),
            Unit::Records(e) => format!("records of {e}"),
        }
    }
}

/// What one unit of an indicator is.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Unit {
    /// A case (the default).
    #[default]
    Cases,
    /// Each record of this event (a referral, a plan version): its own
    /// answers decide the filters, its own day the period; an event a
    /// criterion requires must follow it, before the next record.
    Records(String),
}

/// Which date puts a case in a reporting period.
#[derive(Debug, Clone, PartialEq)]
pub enum PeriodBy {
    Opened,
    Closed,
    /// Open at any time during the period.
    Active,
    Event(String),
    Fact(String),
}

/// A population: a condition on the final facts and events the case has
/// (or has not) had by the period's end.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Criteria {
    pub filter: Option<Condition>,
    pub has_events: Vec<String>,
    pub lacks_events: Vec<String>,
    /// At least so many records of an event (on distinct days) by the
    /// period's end (BT G1: "several follow-up visits").
    pub min_events: Vec<(String, usize)>,
}

/// The child's earlier case that qualifies this one (KZ indicator 14: a
/// re-referral within a year of a completed care plan).
#[derive(Debug, Clone, PartialEq)]
pub struct PreviousCase {
    pub filter: Option<Condition>,
    /// The fact of the earlier case whose date must lie within `within`
    /// before this case's opening.
    pub date: String,
    pub within: Limit,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Indicator {
    pub id: String,
    pub label: String,
    pub level: String,
    pub title: String,
    pub source: String,
    pub period: PeriodBy,
    pub population: Criteria,
    /// For a percentage: (numerator, denominator), both within the population.
    pub ratio: Option<(Criteria, Criteria)>,
    pub previous_case: Option<PreviousCase>,
    /// The breakdowns the manual asks for.
    pub by: Vec<String>,
    pub unit: Unit,
    /// What a reader must know to read the counts (a threshold the
    /// manual does not give); shown with the report, not only in notes.
    pub caveat: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Indicators {
    pub age_bands: Vec<AgeBand>,
    /// In the file's order.
    pub dimensions: Vec<(String, Dimension)>,
    pub list: Vec<Indicator>,
    /// As written: id, label, title, source, reason.
    pub not_computable: Vec<Value>,
}

impl Indicators {
    pub fn dimension(&self, name: &str) -> Option<&Dimension> {
        self.dimensions
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, d)| d)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIndicator {
    id: String,
    #[serde(default)]
    label: String,
    #[serde(default)]
    level: String,
    title: String,
    period: Value,
    #[serde(default)]
    filter: Option<Value>,
    #[serde(default)]
    has_events: Vec<String>,
    #[serde(default)]
    lacks_events: Vec<String>,
    #[serde(default)]
    unit: Option<Value>,
    #[serde(default)]
    caveat: Option<String>,
    #[serde(default)]
    numerator: Option<RawCriteria>,
    #[serde(default)]
    denominator: Option<RawCriteria>,
    #[serde(default)]
    previous_case: Option<RawPrevious>,
    #[serde(default)]
    by: Vec<String>,
    #[serde(default)]
    source: String,
    #[serde(default)]
    notes: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCriteria {
    #[serde(default)]
    filter: Option<Value>,
    #[serde(default)]
    min_events: std::collections::BTreeMap<String, usize>,
    #[serde(default)]
    has_events: Vec<String>,
    #[serde(default)]
    lacks_events: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrevious {
    #[serde(default)]
    filter: Option<Value>,
    date: String,
    within: String,
}

/// The `indicators` part of a programme file, checked by `c`.
pub(super) fn compile(
    c: &mut Checker,
    age_bands: &[Value],
    disaggregations: &Value,
    indicators: &[Value],
    not_computable: &[Value],
) -> Indicators {
    let mut out = Indicators {
        not_computable: not_computable.to_vec(),
        ..Indicators::default()
    };
    for (i, raw) in age_bands.iter().enumerate() {
        match AgeBand::deserialize(raw) {
            Ok(band) => {
                if band.to.is_some_and(|to| to < band.from) {
                    c.problem(format!("/age_bands/{i}/to"), "ends before it starts");
                }
                if let Some(prev) = out.age_bands.last() {
                    if prev.to.is_none_or(|to| to + 1 != band.from) {
                        c.problem(
                            format!("/age_bands/{i}/from"),
                            "bands must follow each other without gap or overlap",
                        );
                    }
                }
                out.age_bands.push(band);
            }
            Err(e) => c.problem(format!("/age_bands/{i}"), e.to_string()),
        }
    }
    match disaggregations {
        Value::Null => {}
        Value::Object(map) => {
            for (name, raw) in map {
                if let Some(d) = dimension(c, &format!("/disaggregations/{name}"), raw) {
                    if matches!(d, Dimension::AgeFrom(_)) && out.age_bands.is_empty() {
                        c.problem(
                            format!("/disaggregations/{name}"),
                            "an age breakdown needs age_bands",
                        );
                    }
                    out.dimensions.push((name.clone(), d));
                }
            }
        }
        _ => c.problem("/disaggregations".into(), "is an object of breakdowns"),
    }
    let mut ids = std::collections::HashSet::new();
    for (i, raw) in indicators.iter().enumerate() {
        let at = format!("/indicators/{i}");
        let raw = match RawIndicator::deserialize(raw) {
            Ok(r) => r,
            Err(e) => {
                c.problem(at, e.to_string());
                continue;
            }
        };
        let _ = &raw.notes;
        if !ids.insert(raw.id.clone()) || raw.id.starts_with("T-") {
            c.problem(
                format!("{at}/id"),
                format!(
                    "{:?} is listed twice or uses the timeliness prefix T-",
                    raw.id
                ),
            );
        }
        let unit = match &raw.unit {
            None => Unit::Cases,
            Some(Value::String(u)) if u == "cases" => Unit::Cases,
            Some(Value::Object(m))
                if m.len() == 1 && m.get("event").is_some_and(Value::is_string) =>
            {
                let event = m["event"].as_str().unwrap_or_default();
                c.event(format!("{at}/unit/event"), event);
                if raw.period != serde_json::json!({"event": event}) {
                    c.problem(
                        format!("{at}/period"),
                        "an indicator counting records of an event counts them by that event",
                    );
                }
                Unit::Records(event.into())
            }
            Some(_) => {
                c.problem(
                    format!("{at}/unit"),
                    "\"cases\" or {\"event\": E} (each record of E); distinct children are always reported beside",
                );
                Unit::Cases
            }
        };

        for (j, name) in raw.by.iter().enumerate() {
            if out.dimension(name).is_none() {
                c.problem(
                    format!("{at}/by/{j}"),
                    format!("unknown breakdown {name:?}"),
                );
            }
        }
        let period = period(c, &format!("{at}/period"), &raw.period);
        let population = criteria(
            c,
            &at,
            raw.filter.as_ref(),
            &raw.has_events,
            &raw.lacks_events,
            &Default::default(),
        );
        let ratio = match (&raw.numerator, &raw.denominator) {
            (None, None) => None,
            (Some(n), Some(d)) => Some((
                criteria(
                    c,
                    &format!("{at}/numerator"),
                    n.filter.as_ref(),
                    &n.has_events,
                    &n.lacks_events,
                    &n.min_events,
                ),
                criteria(
                    c,
                    &format!("{at}/denominator"),
                    d.filter.as_ref(),
                    &d.has_events,
                    &d.lacks_events,
                    &d.min_events,
                ),
            )),
            _ => {
                c.problem(at.clone(), "a percentage needs numerator and denominator");
                None
            }
        };
        let previous_case = raw.previous_case.as_ref().and_then(|p| {
            let at = format!("{at}/previous_case");
            let filter = p
                .filter
                .as_ref()
                .and_then(|f| c.condition(format!("{at}/filter"), f));
            c.fact(format!("{at}/date"), &p.date);
            let within = c.limit(format!("{at}/within"), &p.within)?;
            Some(PreviousCase {
                filter,
                date: p.date.clone(),
                within,
            })
        });
        if previous_case.is_some() && period != Some(PeriodBy::Opened) {
            c.problem(
                format!("{at}/period"),
                "an indicator with previous_case counts by \"opened\"",
            );
        }
        if matches!(unit, Unit::Records(_)) && (ratio.is_none() || previous_case.is_some()) {
            c.problem(
                format!("{at}/unit"),
                "records of an event are counted as a percentage (a count of records has no column), without previous_case",
            );
        }
        let Some(period) = period else { continue };
        out.list.push(Indicator {
            id: raw.id,
            label: raw.label,
            level: raw.level,
            title: raw.title,
            source: raw.source,
            period,
            population,
            ratio,
            previous_case,
            by: raw.by,
            unit,
            caveat: raw.caveat,
        });
    }
    for (i, raw) in not_computable.iter().enumerate() {
        if raw.get("id").and_then(Value::as_str).is_none()
            || raw.get("reason").and_then(Value::as_str).is_none()
        {
            c.problem(
                format!("/not_computable/{i}"),
                "names the indicator (id) and why it cannot be computed (reason)",
            );
        }
    }
    out
}

fn dimension(c: &mut Checker, at: &str, raw: &Value) -> Option<Dimension> {
    if let Some(m) = raw.as_object().filter(|m| {
        m.len() == 2
            && m.get("case") == Some(&Value::from("readmission"))
            && m.contains_key("declared")
    }) {
        let declared = c.condition(format!("{at}/declared"), &m["declared"]);
        return Some(Dimension::Readmission(declared));
    }
    let map = raw.as_object().filter(|m| m.len() == 1);
    let Some((key, value)) = map.and_then(|m| m.iter().next()) else {
        c.problem(
            at.into(),
            "a breakdown is one of {\"fact\"}, {\"age_from\"}, {\"case\"}, {\"previous_case_fact\"}, {\"event_fact\"}, {\"duration\"}",
        );
        return None;
    };
    let text = value.as_str().unwrap_or_default();
    let at = format!("{at}/{key}");
    match key.as_str() {
        "event_fact" | "duration" => event_dimension(c, &at, key, value),
        "fact" | "age_from" | "previous_case_fact" => {
            c.fact(at, text);
            Some(match key.as_str() {
                "fact" => Dimension::Fact(text.into()),
                "age_from" => Dimension::AgeFrom(text.into()),
                _ => Dimension::PreviousCaseFact(text.into()),
            })
        }
        "case" => match text {
            "readmission" => Some(Dimension::Readmission(None)),
            "site" => Some(Dimension::Site),
            "programme" => Some(Dimension::Programme),
            _ => {
                c.problem(at, "readmission, site or programme");
                None
            }
        },
        _ => {
            c.problem(at, "unknown breakdown kind");
            None
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEventDimension {
    event: String,
    #[serde(default)]
    fact: Option<String>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    bands: Vec<AgeBand>,
}

/// `{"event_fact": {"event", "fact"}}` or
/// `{"duration": {"event", "from", "to", "bands"}}` (bands in days).
fn event_dimension(c: &mut Checker, at: &str, key: &str, value: &Value) -> Option<Dimension> {
    let raw = match RawEventDimension::deserialize(value) {
        Ok(r) => r,
        Err(e) => {
            c.problem(at.into(), e.to_string());
            return None;
        }
    };
    c.event(format!("{at}/event"), &raw.event);
    if key == "event_fact" {
        let Some(fact) = raw.fact else {
            c.problem(format!("{at}/fact"), "names the fact");
            return None;
        };
        c.fact(format!("{at}/fact"), &fact);
        return Some(Dimension::EventFact {
            event: raw.event,
            fact,
        });
    }
    let (Some(from), Some(to)) = (raw.from, raw.to) else {
        c.problem(at.into(), "a duration names its from and to date facts");
        return None;
    };
    c.fact(format!("{at}/from"), &from);
    c.fact(format!("{at}/to"), &to);
    for (i, pair) in raw.bands.windows(2).enumerate() {
        if pair[0].to.is_none_or(|to| to + 1 != pair[1].from) {
            c.problem(
                format!("{at}/bands/{}", i + 1),
                "bands must follow each other without gap or overlap",
            );
        }
    }
    if raw.bands.first().is_none_or(|b| b.from != 0)
        || raw.bands.last().is_some_and(|b| b.to.is_some())
    {
        c.problem(
            format!("{at}/bands"),
            "bands start at 0 days and the last is open-ended",
        );
    }
    Some(Dimension::Duration {
        event: raw.event,
        from,
        to,
        bands: raw.bands,
    })
}

fn period(c: &mut Checker, at: &str, raw: &Value) -> Option<PeriodBy> {
    if let Some(text) = raw.as_str() {
        return match text {
            "opened" => Some(PeriodBy::Opened),
            "closed" => Some(PeriodBy::Closed),
            "active" => Some(PeriodBy::Active),
            _ => {
                c.problem(
                    at.into(),
                    "opened, closed, active, {\"event\": E} or {\"fact\": F}",
                );
                None
            }
        };
    }
    match raw.as_object().filter(|m| m.len() == 1) {
        Some(m) if m.get("event").is_some_and(Value::is_string) => {
            let event = m["event"].as_str().unwrap_or_default();
            c.event(format!("{at}/event"), event);
            Some(PeriodBy::Event(event.into()))
        }
        Some(m) if m.get("fact").is_some_and(Value::is_string) => {
            let fact = m["fact"].as_str().unwrap_or_default();
            c.fact(format!("{at}/fact"), fact);
            Some(PeriodBy::Fact(fact.into()))
        }
        _ => {
            c.problem(
                at.into(),
                "opened, closed, active, {\"event\": E} or {\"fact\": F}",
            );
            None
        }
    }
}

fn criteria(
    c: &mut Checker,
    at: &str,
    filter: Option<&Value>,
    has: &[String],
    lacks: &[String],
    min: &std::collections::BTreeMap<String, usize>,
) -> Criteria {
    for (key, list) in [("has_events", has), ("lacks_events", lacks)] {
        for (j, event) in list.iter().enumerate() {
            c.event(format!("{at}/{key}/{j}"), event);
        }
    }
    for event in min.keys() {
        c.event(format!("{at}/min_events/{event}"), event);
    }
    Criteria {
        filter: filter.and_then(|f| c.condition(format!("{at}/filter"), f)),
        has_events: has.to_vec(),
        lacks_events: lacks.to_vec(),
        min_events: min.iter().map(|(e, n)| (e.clone(), *n)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::programmes::Programmes;

    #[test]
    fn the_shipped_indicators_load() {
        let programmes = Programmes::shipped();
        let kz = &programmes.get("kz").unwrap().indicators;
        for id in [
            "IND-01", "IND-02", "IND-03", "IND-04", "IND-05", "IND-06", "IND-07", "IND-08A",
            "IND-08B", "IND-08C", "IND-08D", "IND-08E", "IND-09", "IND-10", "IND-11", "IND-12A",
            "IND-12B", "IND-12C", "IND-12D", "IND-12", "IND-13", "IND-14",
        ] {
            assert!(kz.list.iter().any(|i| i.id == id), "{id} missing");
        }
        let bt = &programmes.get("bt").unwrap().indicators;
        assert!(bt.list.iter().all(|i| i.ratio.is_some() || i.id == "BT-A6"));
        assert!(!bt.not_computable.is_empty());
    }

    #[test]
    fn mistakes_in_indicators_are_reported_with_their_pointer() {
        let set = crate::forms::definitions::shipped();
        let file = set
            .programmes
            .iter()
            .find(|f| f.document["programme"] == "kz")
            .unwrap();
        let mut doc = file.document.clone();
        doc["indicators"][0]["by"] = json!(["sex", "shoe_size"]);
        doc["indicators"][1]["filter"] = json!({"fact": "child.no_such_fact", "eq": 1});
        doc["indicators"][2]["period"] = json!({"event": "no_such_event"});
        doc["indicators"][3]["colour"] = json!("red");
        doc["disaggregations"]["bad"] = json!({"case": "weather"});
        let vocabulary = crate::programmes::Vocabulary::of(&set);
        let problems = crate::programmes::compile(&doc, &vocabulary).unwrap_err();
        for expected in [
            "/indicators/0/by/1",
            "/indicators/1/filter",
            "/indicators/2/period/event",
            "/indicators/3",
            "/disaggregations/bad/case",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(expected)),
                "{expected} not in {problems:#?}"
            );
        }
    }
}
