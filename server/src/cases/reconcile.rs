//! Reconciliation: what a stored submission does to its case — a timeline
//! event, an edit taking its predecessor out of the fold, the fold again,
//! and conflicts with what changed since the phone's version. Runs inside
//! the submission's transaction, so a case never disagrees with its events.

use super::conflicts;
use super::timeline::{self, NewEvent, SubmissionEvent, ACTION, SUBMISSION};
use super::{find, Case};
use crate::db::DbConnection;
use crate::error::{AppError, AppResult};
use crate::programmes::{holidays, Programme, Programmes, CASE_ASSIGNED};

/// The fact an assignment sets.
pub const ASSIGNED_TO: &str = "case.assigned_to";

pub fn programme_of(case_programme: &str) -> AppResult<std::sync::Arc<Programme>> {
    Programmes::shipped()
        .get(case_programme)
        .cloned()
        .ok_or_else(|| AppError::internal(format!("no rules for programme {case_programme}")))
}

pub struct Stored<'a> {
    pub instance_id: &'a str,
    pub event: &'a SubmissionEvent,
    pub by: &'a str,
    pub base_version: Option<i64>,
    pub supersedes: Option<&'a str>,
}

/// Adds submission `s` to `case` (whose version is now `seq`) and folds it.
pub fn submission(conn: &mut DbConnection, case_id: &str, seq: i64, s: Stored) -> AppResult<Case> {
    let case = find(conn, case_id)?.ok_or_else(|| AppError::NotFound("no such case".into()))?;
    let programme = programme_of(&case.programme)?;
    let calendar = holidays::calendar(conn, &programme)?;
    timeline::record(
        conn,
        &calendar,
        &case.id,
        seq,
        NewEvent {
            id: s.instance_id,
            name: &s.event.name,
            kind: SUBMISSION,
            occurred_at: &s.event.occurred_at,
            recorded_by: s.by,
            base_version: s.base_version,
            facts: &s.event.facts,
            detail: None,
        },
    )?;
    // A field worker who opens a case is assigned to it there and then:
    // the timeline says so, for the assignment deadlines.
    if seq == 1 && case.opened_by_instance == s.instance_id {
        if let Some(assignee) = &case.assigned_to {
            let mut facts = serde_json::Map::new();
            facts.insert(ASSIGNED_TO.into(), assignee.clone().into());
            timeline::record(
                conn,
                &calendar,
                &case.id,
                seq,
                NewEvent {
                    id: &format!("{}:assigned", s.instance_id),
                    name: CASE_ASSIGNED,
                    kind: ACTION,
                    occurred_at: &s.event.occurred_at,
                    recorded_by: s.by,
                    base_version: None,
                    facts: &facts,
                    detail: Some(serde_json::json!({ "assignee": assignee, "on_opening": true })),
                },
            )?;
        }
    }
    if let Some(earlier) = s.supersedes {
        timeline::supersede(conn, earlier)?;
    }
    let folded = timeline::refold(conn, &programme, &calendar, &case)?;
    conflicts::detect(
        conn,
        &case,
        s.instance_id,
        s.base_version,
        &s.event.facts,
        &folded,
    )?;
    find(conn, case_id)?.ok_or_else(|| AppError::NotFound("no such case".into()))
}
