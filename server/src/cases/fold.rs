//! The case as a fold over its timeline. Events are applied in the order
//! they happened — `occurred_at`, then workflow rank, then id — never in the
//! order they arrived, so any arrival order gives the same case. Each event
//! sets facts, may move the state (the programme's transitions), and starts,
//! meets or ends deadlines. Pure: no database, no clock.
//!
//! Rule parameters apply forward only: the facts a deadline's limit reads
//! (a risk level, travel time) are read when that deadline starts, and a
//! later change times only the deadlines that start after it (a recurring
//! rule reads them again at each start). A condition that stops holding
//! ends a deadline not yet due; one already overdue stays overdue until met
//! when what changed is a fact the condition read at the start (the child
//! left the residential unit). A fact first answered later (the intake
//! finds no emergency) says the rule never applied, overdue or not.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::programmes::{
    Calendar, Condition, DeadlineRule, FactRef, Limit, Moment, Programme, Start, DATED_PREFIX,
};

/// One entry of a case's timeline, as the fold needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineEvent {
    /// The submission's instance id or the staff action's id: breaks ties.
    pub id: String,
    pub name: String,
    pub occurred_at: Moment,
    /// The facts this event sets (a fact answered in a repeat group comes
    /// as a list).
    pub facts: Vec<(String, Value)>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Open,
    Met {
        at: DateTime<Utc>,
        event_id: String,
        on_time: bool,
        /// Met by a date-only answer: on time through the due day, and late
        /// by whole days.
        date_only: bool,
    },
    /// Stopped applying before it was due (the case moved on).
    NotApplicable(Ended),
    /// Still open when the case moved on, after it was due.
    Missed(Ended),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ended {
    pub at: DateTime<Utc>,
    pub event_id: String,
}

/// One occurrence of a deadline rule on a case.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Deadline {
    pub rule: String,
    /// 1 for the first occurrence of the rule on this case, then 2, …
    pub occurrence: u32,
    pub started_at: DateTime<Utc>,
    pub started_by: String,
    pub due_at: DateTime<Utc>,
    /// From here on the deadline is "due soon".
    pub soon_at: DateTime<Utc>,
    pub outcome: Outcome,
    /// How lateness is counted: in days when the deadline was met by a
    /// date-only answer, or (open or missed) when its limit counts days;
    /// otherwise in hours.
    pub late_in_days: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = DeadlineStatus)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Upcoming,
    DueSoon,
    Overdue,
    MetOnTime,
    MetLate,
    Missed,
    NotApplicable,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Upcoming => "upcoming",
            Status::DueSoon => "due_soon",
            Status::Overdue => "overdue",
            Status::MetOnTime => "met_on_time",
            Status::MetLate => "met_late",
            Status::Missed => "missed",
            Status::NotApplicable => "not_applicable",
        }
    }
}

impl Deadline {
    pub fn status(&self, now: DateTime<Utc>) -> Status {
        match &self.outcome {
            Outcome::Met { on_time: true, .. } => Status::MetOnTime,
            Outcome::Met { .. } => Status::MetLate,
            Outcome::NotApplicable(_) => Status::NotApplicable,
            Outcome::Missed(_) => Status::Missed,
            Outcome::Open if now > self.due_at => Status::Overdue,
            Outcome::Open if now >= self.soon_at => Status::DueSoon,
            Outcome::Open => Status::Upcoming,
        }
    }

    pub fn is_open(&self) -> bool {
        self.outcome == Outcome::Open
    }
}

/// How late a deadline was met, or is: in whole local days when it was met
/// by a date-only answer (or, still open, when its limit counts days), else
/// in hours to one decimal. Serialised `{"days": 1}` or `{"hours": 17.0}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Late {
    Days(i64),
    Hours(f64),
}

impl Late {
    /// How late `done` is for a deadline due at `due`; `None` when on time.
    pub fn of(
        calendar: &Calendar,
        in_days: bool,
        due: DateTime<Utc>,
        done: DateTime<Utc>,
    ) -> Option<Late> {
        if in_days {
            let days = (calendar.local_date(done) - calendar.local_date(due)).num_days();
            (days > 0).then_some(Late::Days(days))
        } else {
            let seconds = (done - due).num_seconds();
            (seconds > 0).then(|| Late::Hours((seconds as f64 / 360.0).round() / 10.0))
        }
    }

    /// For people: `2d`, `17h`; a lateness in hours of a day or more as
    /// `1d 17h`.
    pub fn short(&self) -> String {
        match *self {
            Late::Days(d) => format!("{d}d"),
            Late::Hours(h) if h < 24.0 => format!("{}h", h.ceil() as i64),
            Late::Hours(h) => {
                let hours = h.ceil() as i64;
                format!("{}d {}h", hours / 24, hours % 24)
            }
        }
    }
}

/// What one event did to the case, for the timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    pub event_id: String,
    pub state_before: String,
    pub state_after: String,
}

/// The case the timeline adds up to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Folded {
    pub state: String,
    pub closed_at: Option<DateTime<Utc>>,
    pub facts: BTreeMap<String, Value>,
    pub deadlines: Vec<Deadline>,
    /// In fold order, one per event.
    pub steps: Vec<Step>,
    /// The local days each event happened (what indicators count by).
    pub event_days: BTreeMap<String, Vec<NaiveDate>>,
}

/// Sorts `events` into fold order: by local day; within a day, workflow
/// order first (a plan answered only with its date, approved at 17:23 the
/// same day, is folded before its approval), then time, then id.
pub fn order(programme: &Programme, events: &mut [TimelineEvent]) {
    let calendar = &programme.calendar;
    events.sort_by_cached_key(|e| {
        (
            calendar.local_date(e.occurred_at.at),
            programme.rank(&e.name),
            e.occurred_at.at,
            e.id.clone(),
        )
    });
}

/// The `dated:F` events of `events`: one per answer of each date fact F a
/// rule is met by (docs/programmes.md, "Dated steps"), on its date, with the
/// id of the submission that lists it. Answers that are not dates are left
/// out: the form's validation has already refused them.
fn dated_steps(
    programme: &Programme,
    calendar: &Calendar,
    events: &[TimelineEvent],
) -> Vec<TimelineEvent> {
    let mut steps = Vec::new();
    for event in events {
        for (fact, value) in &event.facts {
            if !programme.dated_facts.contains(fact) {
                continue;
            }
            let values = match value {
                Value::Array(items) => items.as_slice(),
                one => std::slice::from_ref(one),
            };
            for value in values {
                if let Some(at) = calendar.moment(value) {
                    steps.push(TimelineEvent {
                        id: event.id.clone(),
                        name: format!("{DATED_PREFIX}{fact}"),
                        occurred_at: at,
                        facts: Vec::new(),
                    });
                }
            }
        }
    }
    steps
}

/// Folds the timeline. `events` need not be sorted.
pub fn fold(programme: &Programme, calendar: &Calendar, events: &mut [TimelineEvent]) -> Folded {
    order(programme, events);
    let steps = dated_steps(programme, calendar, events);
    let mut expanded;
    let events: &mut [TimelineEvent] = if steps.is_empty() {
        events
    } else {
        expanded = events.to_vec();
        expanded.extend(steps);
        order(programme, &mut expanded);
        &mut expanded
    };
    let mut fold = Fold {
        programme,
        calendar,
        state: programme.initial_state.clone(),
        closed_at: None,
        facts: HashMap::new(),
        deadlines: Vec::new(),
        rule_index: Vec::new(),
        timing: Vec::new(),
        read_at_start: Vec::new(),
        open: vec![None; programme.deadlines.len()],
        started: vec![0; programme.deadlines.len()],
        last_event: HashMap::new(),
        last_entered: HashMap::new(),
        steps: Vec::with_capacity(events.len()),
    };
    let mut event_days: BTreeMap<String, Vec<NaiveDate>> = BTreeMap::new();
    for event in events.iter() {
        fold.apply(event);
        if event.name.starts_with(DATED_PREFIX) {
            // Part of its submission's event, not an event of its own.
            fold.steps.pop();
            continue;
        }
        let day = calendar.local_date(event.occurred_at.at);
        let days = event_days.entry(event.name.clone()).or_default();
        if days.last() != Some(&day) {
            days.push(day);
        }
    }
    Folded {
        state: fold.state,
        closed_at: fold.closed_at,
        facts: fold.facts.into_iter().collect(),
        deadlines: fold.deadlines,
        steps: fold.steps,
        event_days,
    }
}

struct Fold<'a> {
    programme: &'a Programme,
    calendar: &'a Calendar,
    state: String,
    closed_at: Option<DateTime<Utc>>,
    facts: HashMap<String, Value>,
    deadlines: Vec<Deadline>,
    /// For each deadline, the index of its rule; for each rule, its open
    /// occurrence (index into `deadlines`) and how many it has had.
    rule_index: Vec<usize>,
    /// For each deadline, its limit as read when it started.
    timing: Vec<Timing>,
    /// For each deadline, the answered facts its condition read when it
    /// started, with their values then.
    read_at_start: Vec<Vec<(String, Value)>>,
    open: Vec<Option<usize>>,
    started: Vec<u32>,
    /// When each event name last happened, and each state was last entered:
    /// what `latest_of` starts look back at.
    last_event: HashMap<String, Moment>,
    last_entered: HashMap<String, Moment>,
    steps: Vec<Step>,
}

impl Fold<'_> {
    fn holds(&self, condition: &Option<crate::programmes::Condition>) -> bool {
        condition
            .as_ref()
            .is_none_or(|c| c.test(&|fact| self.facts.get(&fact.0)))
    }

    fn apply(&mut self, event: &TimelineEvent) {
        let rules = &self.programme.deadlines;
        // Condition starts fire when the condition turns true.
        let held_before: Vec<bool> = rules
            .iter()
            .map(|r| condition_start_holds(&r.start, &self.facts))
            .collect();

        for (fact, value) in &event.facts {
            self.facts.insert(fact.clone(), value.clone());
        }
        self.last_event
            .insert(event.name.clone(), event.occurred_at);

        let before = self.state.clone();
        let entered = self.transition(event);
        for state in &entered {
            self.last_entered.insert(state.clone(), event.occurred_at);
        }
        let closed = self.programme.is_closed_state(&self.state);
        if closed && self.closed_at.is_none() {
            self.closed_at = Some(event.occurred_at.at);
        } else if !closed {
            self.closed_at = None;
        }

        let restarts = self.meet(event);
        self.end_or_update(event, closed);
        self.start(event, &entered, &held_before, &restarts, closed);

        self.steps.push(Step {
            event_id: event.id.clone(),
            state_before: before,
            state_after: self.state.clone(),
        });
    }

    /// Moves the state by the first matching transition, then by `"*"`
    /// transitions while one matches. Returns the states entered.
    fn transition(&mut self, event: &TimelineEvent) -> Vec<String> {
        let mut entered = Vec::new();
        let matches = |fold: &Fold, on_event: bool| {
            fold.programme
                .transitions
                .iter()
                .find(|t| {
                    let on = match &t.on {
                        Some(name) => on_event && name == &event.name,
                        None => true,
                    };
                    on && t
                        .from
                        .as_ref()
                        .is_none_or(|from| from.contains(&fold.state))
                        && t.to != fold.state
                        && fold.holds(&t.when)
                })
                .map(|t| t.to.clone())
        };
        let mut next = matches(self, true);
        // A bound on automatic moves, in case rules chase each other.
        for _ in 0..self.programme.states.len() {
            let Some(to) = next else { break };
            self.state = to.clone();
            entered.push(to);
            next = matches(self, false);
        }
        entered
    }

    /// Meets the open deadlines this event satisfies. Returns the recurring
    /// rules to start again from this event.
    fn meet(&mut self, event: &TimelineEvent) -> Vec<usize> {
        let mut restarts = Vec::new();
        for i in 0..self.deadlines.len() {
            let d = &self.deadlines[i];
            if !d.is_open() {
                continue;
            }
            let index = self.rule_index[i];
            let rule = &self.programme.deadlines[index];
            let started = Moment {
                at: d.started_at,
                date_only: false,
            };
            let done = self.meeting_moment(rule, event);
            // "Before the meeting" rules are met before their start.
            let backwards = self.timing[i].limit.is_backwards();
            if !rule.met_by.contains(&event.name)
                || (!backwards && !self.calendar.not_before(done, started))
                || !self.holds(&rule.met_when)
            {
                continue;
            }
            let on_time = self.calendar.on_time(done, d.due_at);
            self.deadlines[i].outcome = Outcome::Met {
                // A date-only answer on the start's own day: not before it.
                at: done.at.max(d.started_at),
                event_id: event.id.clone(),
                on_time,
                date_only: done.date_only,
            };
            self.deadlines[i].late_in_days = done.date_only;
            self.open[index] = None;
            if rule.every {
                restarts.push(index);
            }
        }
        restarts
    }

    /// Ends open deadlines that no longer apply, and moves those whose
    /// start moved (a later removal restarts the 48 hours). Their limits
    /// stay as read when they started; one already overdue at this event
    /// keeps its due date, and stays open when its condition stops holding.
    fn end_or_update(&mut self, event: &TimelineEvent, closed: bool) {
        for i in 0..self.deadlines.len() {
            if !self.deadlines[i].is_open() {
                continue;
            }
            let index = self.rule_index[i];
            let rule = &self.programme.deadlines[index];
            let left_state = rule
                .while_state
                .as_ref()
                .is_some_and(|states| !states.contains(&self.state));
            let moved_on = (closed && !rule.after_closure) || left_state;
            let overdue = !self
                .calendar
                .on_time(event.occurred_at, self.deadlines[i].due_at);
            // Overdue, and false only because a fact it read at the start
            // changed since: stays overdue until met.
            let stays = overdue
                && rule
                    .when
                    .as_ref()
                    .is_some_and(|c| self.held_at_start(c, &self.read_at_start[i]));
            if moved_on || (!self.holds(&rule.when) && !stays) {
                // The case moved on after the deadline was due: missed, and
                // it stays missed for the timeliness indicators. A rule whose
                // condition turned false no longer applies.
                let ended = Ended {
                    at: event.occurred_at.at,
                    event_id: event.id.clone(),
                };
                self.deadlines[i].outcome =
                    if moved_on && event.occurred_at.at > self.deadlines[i].due_at {
                        Outcome::Missed(ended)
                    } else {
                        Outcome::NotApplicable(ended)
                    };
                self.open[index] = None;
                continue;
            }
            if overdue || !matches!(rule.start, Start::LatestOf(_)) || rule.every {
                continue;
            }
            let Some(started) = self.known_moment(&rule.start) else {
                continue;
            };
            let (due, soon) = self.due(started, self.timing[i], rule);
            let d = &mut self.deadlines[i];
            d.started_at = started.at;
            d.due_at = due;
            d.soon_at = soon;
        }
    }

    fn start(
        &mut self,
        event: &TimelineEvent,
        entered: &[String],
        held_before: &[bool],
        restarts: &[usize],
        closed: bool,
    ) {
        for (index, rule) in self.programme.deadlines.iter().enumerate() {
            if self.open[index].is_some() {
                continue;
            }
            // Starts at an event or a fact happen once per case; entering a
            // state or a condition turning true start the rule every time.
            let once = !rule.each
                && matches!(
                    rule.start,
                    Start::Event(_) | Start::Fact(_) | Start::LatestOf(_)
                );
            if once && !restarts.contains(&index) && self.started[index] > 0 {
                continue;
            }
            let from = if restarts.contains(&index) {
                Some(event.occurred_at)
            } else if self.triggered(&rule.start, event, entered, held_before[index]) {
                // The starting record's own answer first (an older record's
                // removal time is not this one's), else the case's.
                rule.start_at
                    .as_ref()
                    .and_then(|fact| {
                        event
                            .facts
                            .iter()
                            .find(|(f, _)| f == fact)
                            .map(|(_, v)| v)
                            .or_else(|| self.facts.get(fact))
                    })
                    .and_then(|v| self.calendar.moment(v))
                    .or_else(|| self.known_moment(&rule.start))
                    .or(Some(event.occurred_at))
            } else {
                None
            };
            let Some(from) = from else { continue };
            if (closed && !rule.after_closure)
                || rule
                    .while_state
                    .as_ref()
                    .is_some_and(|states| !states.contains(&self.state))
                || !self.holds(&rule.when)
            {
                continue;
            }
            let Some(limit) = rule.limit.for_facts(&self.facts) else {
                continue;
            };
            let timing = Timing {
                limit,
                plus_hours: rule
                    .plus_hours
                    .as_ref()
                    .and_then(|fact| self.facts.get(fact))
                    .and_then(Value::as_f64)
                    .filter(|h| h.is_finite() && *h > 0.0),
            };
            let (due_at, soon_at) = self.due(from, timing, rule);
            self.started[index] += 1;
            let occurrence = self.started[index];
            let mut outcome = Outcome::Open;
            let mut late_in_days = timing.counts_days();
            // A form that records both when the clock started and when the
            // step was done (first contact on the registration form) starts
            // and meets the rule at once.
            if rule.met_at.is_some()
                && rule.met_by.contains(&event.name)
                && self.holds(&rule.met_when)
            {
                let done = self.meeting_moment(rule, event);
                if limit.is_backwards() || self.calendar.not_before(done, from) {
                    outcome = Outcome::Met {
                        at: done.at.max(from.at),
                        event_id: event.id.clone(),
                        on_time: self.calendar.on_time(done, due_at),
                        date_only: done.date_only,
                    };
                    late_in_days = done.date_only;
                }
            }
            if outcome == Outcome::Open {
                self.open[index] = Some(self.deadlines.len());
            }
            self.rule_index.push(index);
            self.timing.push(timing);
            self.read_at_start.push(
                rule.when
                    .as_ref()
                    .map(|c| self.answered_facts_read(c))
                    .unwrap_or_default(),
            );
            self.deadlines.push(Deadline {
                rule: rule.id.clone(),
                occurrence,
                started_at: from.at,
                started_by: event.id.clone(),
                due_at,
                soon_at,
                outcome,
                late_in_days,
            });
        }
    }

    /// The answered facts `condition` reads now, with their values.
    fn answered_facts_read(&self, condition: &Condition) -> Vec<(String, Value)> {
        let read = RefCell::new(Vec::new());
        condition.test(&|fact: &FactRef| {
            let value = self.facts.get(&fact.0);
            if let Some(v) = value.filter(|v| !v.is_null()) {
                read.borrow_mut().push((fact.0.clone(), v.clone()));
            }
            value
        });
        read.into_inner()
    }

    /// Whether `condition` holds with the facts it read at the start taken
    /// as they were then (facts answered since, as they are now).
    fn held_at_start(&self, condition: &Condition, read: &[(String, Value)]) -> bool {
        condition.test(&|fact: &FactRef| {
            read.iter()
                .find(|(name, _)| name == &fact.0)
                .map(|(_, v)| v)
                .or_else(|| self.facts.get(&fact.0))
        })
    }

    /// When `event` did what `rule` waits for: the time its `met_at` fact
    /// says, when the form recorded one (the latest, for a list — every
    /// invitee's report must be in), else when the event happened.
    fn meeting_moment(&self, rule: &DeadlineRule, event: &TimelineEvent) -> Moment {
        let value = rule
            .met_at
            .as_ref()
            .and_then(|fact| event.facts.iter().find(|(f, _)| f == fact))
            .map(|(_, value)| value);
        let latest = match value {
            Some(Value::Array(items)) => items.iter().filter_map(|v| self.calendar.moment(v)).max(),
            Some(v) => self.calendar.moment(v),
            None => None,
        };
        latest.unwrap_or(event.occurred_at)
    }

    fn due(
        &self,
        from: Moment,
        timing: Timing,
        rule: &DeadlineRule,
    ) -> (DateTime<Utc>, DateTime<Utc>) {
        let mut due = self.calendar.due(from, timing.limit);
        if let Some(hours) = timing.plus_hours {
            due += chrono::Duration::seconds((hours * 3600.0) as i64);
        }
        let soon = (due - rule.due_soon.approximate()).max(from.at);
        (due, soon)
    }

    /// Whether this event fires `start`.
    fn triggered(
        &self,
        start: &Start,
        event: &TimelineEvent,
        entered: &[String],
        held: bool,
    ) -> bool {
        match start {
            Start::Event(name) => &event.name == name,
            Start::State(state) => entered.contains(state),
            Start::Fact(fact) => event.facts.iter().any(|(f, _)| f == fact),
            Start::Condition(c) => !held && c.test(&|fact| self.facts.get(&fact.0)),
            Start::LatestOf(list) => list.iter().any(|s| self.triggered(s, event, entered, held)),
        }
    }

    /// When `start` happened, from what the fold knows so far.
    fn known_moment(&self, start: &Start) -> Option<Moment> {
        match start {
            Start::Event(name) => self.last_event.get(name).copied(),
            Start::State(state) => self.last_entered.get(state).copied(),
            Start::Fact(fact) => self.facts.get(fact).and_then(|v| self.calendar.moment(v)),
            Start::Condition(_) => None,
            Start::LatestOf(list) => list.iter().filter_map(|s| self.known_moment(s)).max(),
        }
    }
}

/// A deadline's limit and added hours, read from the facts when it started.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Timing {
    limit: Limit,
    plus_hours: Option<f64>,
}

impl Timing {
    /// A limit counted in days ends with a local day: lateness in days.
    fn counts_days(&self) -> bool {
        !matches!(self.limit, Limit::Hours(_)) && self.plus_hours.is_none()
    }
}

fn condition_start_holds(start: &Start, facts: &HashMap<String, Value>) -> bool {
    match start {
        Start::Condition(c) => c.test(&|fact| facts.get(&fact.0)),
        Start::LatestOf(list) => list.iter().any(|s| condition_start_holds(s, facts)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::programmes::{compile, Vocabulary};
    use serde_json::json;

    /// A small programme in the shape of the manuals' rules.
    fn programme() -> Programme {
        let mut vocabulary = Vocabulary::default();
        vocabulary.events.insert(
            "kz".into(),
            [
                "referral_received",
                "initial_assessment_completed",
                "review_held",
                "case_closed",
            ]
            .map(String::from)
            .into(),
        );
        vocabulary
            .opening_events
            .insert("kz".into(), ["referral_received".to_string()].into());
        vocabulary.facts = [
            "referral.immediate_risk",
            "kz.ia_decision",
            "kz.child_removed_at",
        ]
        .map(String::from)
        .into();
        compile(
            &json!({
                "programme": "kz", "title": "t",
                "case_number": {"scheme": "kz_site_sequence"},
                "calendar": {"time_zone": "Asia/Almaty", "weekend": ["sat", "sun"],
                             "holidays": [{"date": "2026-12-16", "name": "Independence Day"}]},
                "states": [{"id": "referred", "title": "Referred"},
                           {"id": "assessed", "title": "Assessed"},
                           {"id": "active", "title": "Active"},
                           {"id": "closed", "title": "Closed", "closed": true}],
                "initial_state": "referred",
                "transitions": [
                    {"on": "initial_assessment_completed", "from": ["referred"],
                     "when": {"fact": "kz.ia_decision", "eq": "c"}, "to": "active"},
                    {"on": "initial_assessment_completed", "from": ["referred"], "to": "assessed"},
                    {"on": "case_closed", "to": "closed"}
                ],
                "deadlines": [
                    {"id": "D7", "title": "IA, immediate risk",
                     "start": {"latest_of": [{"event": "referral_received"}, {"fact": "kz.child_removed_at"}]},
                     "when": {"fact": "referral.immediate_risk", "eq": true},
                     "limit": "48h", "met_by": ["initial_assessment_completed"], "source": "8.3.3"},
                    {"id": "D8", "title": "IA, other",
                     "start": {"event": "referral_received"},
                     "when": {"fact": "referral.immediate_risk", "ne": true},
                     "limit": "72h", "met_by": ["initial_assessment_completed"], "source": "8.3.3"},
                    {"id": "R", "title": "Review", "start": {"state": "active"}, "limit": "7wd",
                     "every": true, "met_by": ["review_held"], "while_state": ["active"],
                     "source": "x"}
                ]
            }),
            &vocabulary,
        )
        .unwrap()
    }

    fn event(id: &str, name: &str, at: &str, facts: Value) -> TimelineEvent {
        let calendar = programme().calendar;
        TimelineEvent {
            id: id.into(),
            name: name.into(),
            occurred_at: calendar.moment(&json!(at)).unwrap(),
            facts: facts
                .as_object()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .collect(),
        }
    }

    fn timeline() -> Vec<TimelineEvent> {
        vec![
            event(
                "a",
                "referral_received",
                "2026-12-11T17:00:00+05:00",
                json!({"referral.immediate_risk": true}),
            ),
            event(
                "b",
                "initial_assessment_completed",
                "2026-12-13T13:00:00+05:00",
                json!({"kz.ia_decision": "c"}),
            ),
            event("c", "review_held", "2026-12-21", json!({})),
            event("d", "review_held", "2027-01-15", json!({})),
            event("e", "case_closed", "2027-01-20T09:00:00+05:00", json!({})),
        ]
    }

    #[test]
    fn deadlines_start_are_met_recur_and_end() {
        let p = programme();
        let folded = fold(&p, &p.calendar, &mut timeline());
        assert_eq!(folded.state, "closed");
        assert!(folded.closed_at.is_some());
        let by = |rule: &str, n: u32| {
            folded
                .deadlines
                .iter()
                .find(|d| d.rule == rule && d.occurrence == n)
                .unwrap_or_else(|| panic!("{rule} #{n} in {:#?}", folded.deadlines))
                .clone()
        };
        // 44 hours after a Friday 17:00 referral: met on time.
        let d7 = by("D7", 1);
        assert!(matches!(d7.outcome, Outcome::Met { on_time: true, .. }));
        assert!(!folded.deadlines.iter().any(|d| d.rule == "D8"));
        // Reviews every 7 working days from the IA (Sunday 13 Dec): due
        // Wed 23 Dec (the 16th is a holiday); met on the 21st; the next one
        // (from the 21st) is due 30 Dec and met late on 15 Jan.
        let r1 = by("R", 1);
        assert_eq!(p.calendar.local_date(r1.due_at).to_string(), "2026-12-23");
        assert!(matches!(r1.outcome, Outcome::Met { on_time: true, .. }));
        let r2 = by("R", 2);
        assert_eq!(p.calendar.local_date(r2.due_at).to_string(), "2026-12-30");
        assert!(matches!(r2.outcome, Outcome::Met { on_time: false, .. }));
        // The third was open when the case closed: no longer applicable.
        assert!(matches!(by("R", 3).outcome, Outcome::NotApplicable(_)));
    }

    #[test]
    fn a_deadline_still_open_when_the_case_closes_after_its_due_date_is_missed() {
        let p = programme();
        let mut events = timeline();
        events.retain(|e| e.id != "d");
        events.last_mut().unwrap().occurred_at = p
            .calendar
            .moment(&json!("2027-02-20T09:00:00+05:00"))
            .unwrap();
        let folded = fold(&p, &p.calendar, &mut events);
        let r2 = folded
            .deadlines
            .iter()
            .find(|d| d.rule == "R" && d.occurrence == 2)
            .unwrap();
        assert!(matches!(r2.outcome, Outcome::Missed(_)), "{r2:#?}");
        assert_eq!(r2.status(Utc::now()), Status::Missed);
    }

    #[test]
    fn every_arrival_order_gives_the_same_case() {
        let p = programme();
        let expected = fold(&p, &p.calendar, &mut timeline());
        let mut order: Vec<usize> = (0..5).collect();
        // Heap's algorithm over all 120 orders.
        fn permute(k: usize, order: &mut Vec<usize>, seen: &mut Vec<Vec<usize>>) {
            if k == 1 {
                seen.push(order.clone());
                return;
            }
            for i in 0..k {
                permute(k - 1, order, seen);
                let j = if k % 2 == 0 { i } else { 0 };
                order.swap(j, k - 1);
            }
        }
        let mut all = Vec::new();
        permute(5, &mut order, &mut all);
        assert_eq!(all.len(), 120);
        let events = timeline();
        for order in all {
            let mut shuffled: Vec<TimelineEvent> =
                order.iter().map(|&i| events[i].clone()).collect();
            assert_eq!(fold(&p, &p.calendar, &mut shuffled), expected, "{order:?}");
        }
    }

    #[test]
    fn a_later_removal_moves_the_start_and_facts_switch_rules() {
        let p = programme();
        let mut events = vec![
            event(
                "a",
                "referral_received",
                "2026-12-11T17:00:00+05:00",
                json!({"referral.immediate_risk": true}),
            ),
            // Removal on Saturday 10:00: the 48 h run from there (8.2.4).
            event(
                "b",
                "referral_received",
                "2026-12-12T10:00:00+05:00",
                json!({"kz.child_removed_at": "2026-12-12T10:00:00+05:00"}),
            ),
        ];
        let folded = fold(&p, &p.calendar, &mut events);
        let d7 = folded.deadlines.iter().find(|d| d.rule == "D7").unwrap();
        assert_eq!(d7.due_at.to_rfc3339(), "2026-12-14T05:00:00+00:00");
        assert_eq!(
            d7.status(d7.due_at - chrono::Duration::hours(1)),
            Status::DueSoon
        );
        assert_eq!(
            d7.status(d7.due_at + chrono::Duration::seconds(1)),
            Status::Overdue
        );
        assert_eq!(d7.status(d7.started_at), Status::Upcoming);

        // Without immediate risk the 72-hour rule applies instead.
        let mut events = vec![event(
            "a",
            "referral_received",
            "2026-12-11T17:00:00+05:00",
            json!({"referral.immediate_risk": false}),
        )];
        let folded = fold(&p, &p.calendar, &mut events);
        let rules: Vec<&str> = folded.deadlines.iter().map(|d| d.rule.as_str()).collect();
        assert_eq!(rules, ["D8"]);
    }

    /// Folds `events` with the shipped rules of `programme`, in every
    /// arrival order: one result.
    fn fold_shipped(programme: &str, events: &[(&str, &str, &str, Value)]) -> Folded {
        let p = crate::programmes::Programmes::shipped()
            .get(programme)
            .unwrap()
            .clone();
        let events: Vec<TimelineEvent> = events
            .iter()
            .map(|(id, name, at, facts)| TimelineEvent {
                id: id.to_string(),
                name: name.to_string(),
                occurred_at: p.calendar.moment(&json!(at)).unwrap(),
                facts: facts
                    .as_object()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .collect(),
            })
            .collect();
        let expected = fold(&p, &p.calendar, &mut events.clone());
        for shift in 1..events.len() {
            let mut turned = events.clone();
            turned.rotate_left(shift);
            turned.swap(0, events.len() - 1);
            assert_eq!(
                fold(&p, &p.calendar, &mut turned),
                expected,
                "order {shift}"
            );
        }
        expected
    }

    fn occurrence(folded: &Folded, rule: &str, n: u32) -> Deadline {
        folded
            .deadlines
            .iter()
            .find(|d| d.rule == rule && d.occurrence == n)
            .unwrap_or_else(|| panic!("{rule} #{n} in {:#?}", folded.deadlines))
            .clone()
    }

    #[test]
    fn a_lower_risk_level_times_only_the_follow_ups_that_start_after_it() {
        // BT §8.2: high risk — follow-ups every 84 h; medium — every 7 days.
        // Plan approved Friday 5 June 10:00 (Thimphu, UTC+6); follow-ups on
        // 8, 11 and 15 June; the one from the 15th (00:00) is due 84 h later,
        // Thursday 18 June 12:00 local (06:00 UTC). A review on 19 June lowers
        // the risk to medium: that follow-up stays due on the 18th (overdue,
        // not re-timed to 22 June); the next, from the follow-up of 20 June,
        // runs 7 days: 27 June, end of day (17:59:59 UTC).
        let folded = fold_shipped(
            "bt",
            &[
                (
                    "a",
                    "case_registered",
                    "2026-06-01",
                    json!({"bt.initial_risk_level": "high"}),
                ),
                (
                    "b",
                    "assessment_completed",
                    "2026-06-01",
                    json!({"risk_level": "high"}),
                ),
                ("c", "case_plan_agreed", "2026-06-04", json!({})),
                (
                    "d",
                    "case_plan_approved",
                    "2026-06-05T10:00:00+06:00",
                    json!({}),
                ),
                (
                    "e",
                    "follow_up_conducted",
                    "2026-06-08",
                    json!({"bt.follow_up_contact_successful": true}),
                ),
                (
                    "f",
                    "follow_up_conducted",
                    "2026-06-11",
                    json!({"bt.follow_up_contact_successful": true}),
                ),
                (
                    "g",
                    "follow_up_conducted",
                    "2026-06-15",
                    json!({"bt.follow_up_contact_successful": true}),
                ),
                (
                    "h",
                    "review_held",
                    "2026-06-19",
                    json!({"risk_level": "medium"}),
                ),
                (
                    "i",
                    "follow_up_conducted",
                    "2026-06-20",
                    json!({"bt.follow_up_contact_successful": true}),
                ),
            ],
        );
        let fourth = occurrence(&folded, "BT-5a", 4);
        assert_eq!(fourth.due_at.to_rfc3339(), "2026-06-18T06:00:00+00:00");
        assert!(
            matches!(
                fourth.outcome,
                Outcome::Met {
                    on_time: false,
                    date_only: true,
                    ..
                }
            ),
            "{fourth:#?}"
        );
        assert!(fourth.late_in_days);
        let p = crate::programmes::Programmes::shipped()
            .get("bt")
            .unwrap()
            .clone();
        let Outcome::Met { at, .. } = fourth.outcome else {
            unreachable!()
        };
        // Met on the 20th, due the 18th: two days late, in days.
        assert_eq!(
            Late::of(&p.calendar, true, fourth.due_at, at),
            Some(Late::Days(2))
        );
        let fifth = occurrence(&folded, "BT-5a", 5);
        assert_eq!(fifth.due_at.to_rfc3339(), "2026-06-27T17:59:59+00:00");
        // The monthly review (high, from 5 June: 5 July) was met by the
        // review; the next, read at medium, is every 2 months: 19 August.
        assert_eq!(
            occurrence(&folded, "BT-5b", 2).due_at.to_rfc3339(),
            "2026-08-19T17:59:59+00:00"
        );

        // Before the follow-up of the 20th: still open and overdue.
        let folded = fold_shipped(
            "bt",
            &[
                (
                    "a",
                    "case_registered",
                    "2026-06-01",
                    json!({"bt.initial_risk_level": "high"}),
                ),
                (
                    "b",
                    "assessment_completed",
                    "2026-06-01",
                    json!({"risk_level": "high"}),
                ),
                (
                    "d",
                    "case_plan_approved",
                    "2026-06-05T10:00:00+06:00",
                    json!({}),
                ),
                (
                    "g",
                    "follow_up_conducted",
                    "2026-06-15",
                    json!({"bt.follow_up_contact_successful": true}),
                ),
                (
                    "h",
                    "review_held",
                    "2026-06-19",
                    json!({"risk_level": "medium"}),
                ),
            ],
        );
        let open = folded
            .deadlines
            .iter()
            .find(|d| d.rule == "BT-5a" && d.is_open())
            .unwrap();
        assert_eq!(open.due_at.to_rfc3339(), "2026-06-18T06:00:00+00:00");
        let now = p
            .calendar
            .moment(&json!("2026-06-19T15:00:00+06:00"))
            .unwrap()
            .at;
        assert_eq!(open.status(now), Status::Overdue);
    }

    #[test]
    fn a_placement_review_overdue_when_the_care_arrangement_changes_stays_overdue() {
        // KZ §8.4 (D12): a child in the CAM/CSC temporary residential unit
        // from Saturday 21 November has the placement reviewed monthly: first
        // by 21 December, end of day in Almaty (18:59:59 UTC). D13 (3 months)
        // is due 21 February. On 28 December — the review a week overdue —
        // the child moves to family-based care: D12 stays open, due the 21st;
        // D13, not yet due, no longer applies. The review of 5 January meets
        // D12, 15 days late (a date), and starts no other (no longer in the
        // unit).
        let unit = json!({"care_arrangement": "cam_csc_temporary_residential_unit",
                          "placement.start_date": "2026-11-21"});
        let folded = fold_shipped(
            "kz",
            &[
                (
                    "a",
                    "referral_received",
                    "2026-11-20T17:00:00+05:00",
                    json!({}),
                ),
                (
                    "b",
                    "temporary_placement_started",
                    "2026-11-21",
                    unit.clone(),
                ),
                (
                    "c",
                    "temporary_placement_started",
                    "2026-12-28",
                    json!({"care_arrangement": "family_based_temporary_care"}),
                ),
                (
                    "d",
                    "decision_made",
                    "2027-01-05",
                    json!({"kz.placement_reviewed_at": "2027-01-05"}),
                ),
            ],
        );
        let d12 = occurrence(&folded, "D12", 1);
        assert_eq!(d12.due_at.to_rfc3339(), "2026-12-21T18:59:59+00:00");
        let Outcome::Met {
            at,
            on_time: false,
            date_only: true,
            ..
        } = d12.outcome
        else {
            panic!("{d12:#?}")
        };
        let p = crate::programmes::Programmes::shipped()
            .get("kz")
            .unwrap()
            .clone();
        assert_eq!(
            Late::of(&p.calendar, d12.late_in_days, d12.due_at, at),
            Some(Late::Days(15))
        );
        assert!(!folded
            .deadlines
            .iter()
            .any(|d| d.rule == "D12" && d.occurrence == 2));
        let d13 = occurrence(&folded, "D13", 1);
        assert_eq!(d13.due_at.to_rfc3339(), "2027-02-21T18:59:59+00:00");
        assert!(matches!(d13.outcome, Outcome::NotApplicable(_)), "{d13:#?}");

        // Still in the unit: the review starts the next month from it.
        let folded = fold_shipped(
            "kz",
            &[
                (
                    "a",
                    "referral_received",
                    "2026-11-20T17:00:00+05:00",
                    json!({}),
                ),
                ("b", "temporary_placement_started", "2026-11-21", unit),
                (
                    "d",
                    "decision_made",
                    "2027-01-05",
                    json!({"kz.placement_reviewed_at": "2027-01-05"}),
                ),
            ],
        );
        assert_eq!(
            occurrence(&folded, "D12", 2).due_at.to_rfc3339(),
            "2027-02-05T18:59:59+00:00"
        );
    }

    #[test]
    fn lateness_is_in_days_for_dates_and_in_hours_for_times() {
        let p = programme();
        let due = p
            .calendar
            .moment(&json!("2026-12-14T10:00:00+05:00"))
            .unwrap()
            .at;
        let at = |t: &str| p.calendar.moment(&json!(t)).unwrap().at;
        assert_eq!(
            Late::of(&p.calendar, false, due, at("2026-12-15T03:00:00+05:00")),
            Some(Late::Hours(17.0))
        );
        assert_eq!(Late::Hours(17.0).short(), "17h");
        assert_eq!(Late::Hours(41.5).short(), "1d 18h");
        assert_eq!(Late::of(&p.calendar, false, due, due), None);
        // A plan dated the day after its due day: 1 day, not 0 h.
        let end_of_day = p
            .calendar
            .end_of(chrono::NaiveDate::from_ymd_opt(2026, 12, 14).unwrap());
        assert_eq!(
            Late::of(&p.calendar, true, end_of_day, at("2026-12-15")),
            Some(Late::Days(1))
        );
        assert_eq!(
            Late::of(&p.calendar, true, end_of_day, at("2026-12-14")),
            None
        );
        assert_eq!(Late::Days(1).short(), "1d");
    }
}
