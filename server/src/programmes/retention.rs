//! How long a programme keeps a closed case file, as data in
//! `programme.json` (`retention`, see docs/programmes.md): rules tried in
//! order, each giving the date until which the file is kept, and what is
//! due after it. The server only reports (`casesync retention report`); it
//! never deletes a case.

use serde::Deserialize;
use serde_json::Value;

use super::Checker;
use crate::forms::model::FieldKind;

#[derive(Debug, Clone, PartialEq)]
pub struct Retention {
    /// Tried in order: the first that gives a date decides.
    pub rules: Vec<Rule>,
    /// What is due once the date is reached (done by people, not the server).
    pub then: Then,
    /// The basis shown when no rule gives a date: the file is kept, and this
    /// says why.
    pub unknown: String,
    pub source: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// Hand the file over to archiving (KZ: the state archives law; BT:
    /// the agency's Annex E §9 process).
    Archive,
}

impl Then {
    pub fn as_str(self) -> &'static str {
        match self {
            Then::Archive => "archive",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub until: Until,
    /// Never earlier than the day the case closed (a KZ child closed after
    /// turning 18 is kept until the closure: kz-manual.md §6 item 29).
    pub not_before_closure: bool,
    /// Short, shown in the report (`kz F7: 18th birthday`).
    pub basis: String,
    pub source: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Until {
    /// The day the child turns `years`, from a date-of-birth fact.
    Birthday { fact: String, years: u32 },
    /// A date a form records (BT D-11 `retain_until`).
    Date { fact: String },
}

impl Until {
    pub fn fact(&self) -> &str {
        match self {
            Until::Birthday { fact, .. } | Until::Date { fact } => fact,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    rules: Vec<RawRule>,
    then: String,
    unknown: String,
    source: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    until: RawUntil,
    #[serde(default)]
    not_before_closure: bool,
    basis: String,
    source: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
enum RawUntil {
    Birthday { fact: String, years: u32 },
    Date { fact: String },
}

/// Reads `retention` (absent: `None`), reporting mistakes with their pointer.
pub(super) fn compile(c: &mut Checker<'_>, raw: Option<&Value>) -> Option<Retention> {
    let raw = raw?;
    let raw: RawRetention = match serde_json::from_value(raw.clone()) {
        Ok(r) => r,
        Err(e) => {
            c.problem("/retention".into(), format!("not a retention object: {e}"));
            return None;
        }
    };
    let then = match raw.then.as_str() {
        "archive" => Then::Archive,
        other => {
            c.problem(
                "/retention/then".into(),
                format!("unknown {other:?} (archive)"),
            );
            Then::Archive
        }
    };
    if raw.rules.is_empty() {
        c.problem("/retention/rules".into(), "names no rule");
    }
    for (at, text) in [("unknown", &raw.unknown), ("source", &raw.source)] {
        if text.trim().is_empty() {
            c.problem(format!("/retention/{at}"), "is empty");
        }
    }
    let mut rules = Vec::new();
    for (i, r) in raw.rules.into_iter().enumerate() {
        let at = |k: &str| format!("/retention/rules/{i}/{k}");
        let until = match r.until {
            RawUntil::Birthday { fact, years } => {
                if !(1..=150).contains(&years) {
                    c.problem(at("until/birthday/years"), "between 1 and 150");
                }
                Until::Birthday { fact, years }
            }
            RawUntil::Date { fact } => Until::Date { fact },
        };
        let kind = match &until {
            Until::Birthday { .. } => "birthday",
            Until::Date { .. } => "date",
        };
        let fact_at = at(&format!("until/{kind}/fact"));
        c.fact(fact_at.clone(), until.fact());
        if let Some((_, field)) = c.vocabulary.fact_kinds.get(until.fact()) {
            if *field != FieldKind::Date {
                c.problem(fact_at, "is not a date fact");
            }
        }
        for (key, text) in [("basis", &r.basis), ("source", &r.source)] {
            if text.trim().is_empty() {
                c.problem(at(key), "is empty");
            }
        }
        rules.push(Rule {
            until,
            not_before_closure: r.not_before_closure,
            basis: r.basis,
            source: r.source,
        });
    }
    Some(Retention {
        rules,
        then,
        unknown: raw.unknown,
        source: raw.source,
    })
}
