//! Staff actions on a case — assignment, approval, conflict resolution —
//! each an event on the timeline like a submission, so the fold sees them
//! in the order they happened. Coordinators of the case's site take them.

use chrono::{DateTime, SecondsFormat, Utc};
use diesel::prelude::*;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::conflicts::{ConflictRow, OPEN, RESOLVED};
use super::reconcile::programme_of;
use super::timeline::{self, NewEvent, ACTION};
use super::{find, Case};
use crate::auth::policy::{self, CaseScope};
use crate::auth::{users, Principal, Role};
use crate::db::schema::conflicts;
use crate::db::DbConnection;
use crate::error::{AppError, AppResult};
use crate::programmes::{holidays, Approval, Programme, CASE_ASSIGNED, CONFLICT_RESOLVED};
use crate::time::now;

fn case_for(conn: &mut DbConnection, who: &Principal, id: &str) -> AppResult<Case> {
    let case = find(conn, id)?.ok_or_else(|| AppError::NotFound("no such case".into()))?;
    policy::manage_case(who, case.scope())?;
    Ok(case)
}

/// When a staff action happened: as stated (an approval signed on paper
/// at a meeting, entered the next morning), else now. Like a form's dates,
/// a stated time is taken as the staff member gives it.
fn when(stated: Option<&str>) -> AppResult<String> {
    let Some(text) = stated else {
        return Ok(Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true));
    };
    DateTime::parse_from_rfc3339(text).map_err(|_| {
        AppError::invalid_field(
            "/occurred_at",
            "must be an RFC 3339 date-time with its offset",
        )
    })?;
    Ok(text.to_string())
}

/// Records action `name` on `case` (whose version the caller already
/// bumped to `seq`) and folds the case again.
#[allow(clippy::too_many_arguments)]
fn record(
    conn: &mut DbConnection,
    case_id: &str,
    seq: i64,
    who: &Principal,
    name: &str,
    occurred_at: &str,
    facts: Map<String, Value>,
    detail: Value,
) -> AppResult<(String, Case)> {
    let case = find(conn, case_id)?.ok_or_else(|| AppError::NotFound("no such case".into()))?;
    let programme = programme_of(&case.programme)?;
    let calendar = holidays::calendar(conn, &programme)?;
    let id = crate::ids::new_row_id();
    timeline::record(
        conn,
        &calendar,
        &case.id,
        seq,
        NewEvent {
            id: &id,
            name,
            kind: ACTION,
            occurred_at,
            recorded_by: &who.user_id,
            base_version: None,
            facts: &facts,
            detail: Some(detail),
        },
    )?;
    timeline::refold(conn, &programme, &calendar, &case)?;
    let case = find(conn, case_id)?.ok_or_else(|| AppError::NotFound("no such case".into()))?;
    Ok((id, case))
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Assignment {
    /// The user to assign; `null` to leave the case unassigned.
    pub assignee: Option<String>,
    pub note: Option<String>,
    /// When it was decided (default: now).
    pub occurred_at: Option<String>,
}

/// What the audit row of an assignment says: the assignee's id, or
/// `unassigned`.
pub fn assignment_detail(case: &Case) -> String {
    case.assigned_to
        .clone()
        .unwrap_or_else(|| "unassigned".into())
}

/// Gives the case to a field worker (or coordinator) of its site.
pub fn assign(
    conn: &mut DbConnection,
    who: &Principal,
    case_id: &str,
    a: &Assignment,
) -> AppResult<Case> {
    let case = case_for(conn, who, case_id)?;
    // Named by id or username; the case stores the id.
    let assignee = match &a.assignee {
        Some(name) => Some(users::resolve(conn, name)?.ok_or_else(|| {
            AppError::invalid_field("/assignee", "no user has this id or username")
        })?),
        None => None,
    };
    if let Some(user) = &assignee {
        let fits = user.active
            && matches!(user.role, Role::FieldWorker | Role::Coordinator)
            && user.site_ids.contains(&case.site_id);
        if !fits {
            return Err(AppError::invalid_field(
                "/assignee",
                "must be an active field worker or coordinator of the case's site",
            ));
        }
    }
    if !case.is_open() {
        return Err(AppError::Conflict("the case is closed".into()));
    }
    let occurred_at = when(a.occurred_at.as_deref())?;
    let assignee = assignee.map(|u| u.id);
    let updated = super::assign(conn, &case, assignee.as_deref())?;
    let mut facts = Map::new();
    facts.insert(
        "case.assigned_to".into(),
        assignee.clone().map_or(Value::Null, Value::String),
    );
    let detail = json!({ "assignee": assignee, "previous": case.assigned_to, "note": a.note });
    Ok(record(
        conn,
        &case.id,
        updated.version,
        who,
        CASE_ASSIGNED,
        &occurred_at,
        facts,
        detail,
    )?
    .1)
}

/// What a coordinator may decide of something put to them.
const DECISIONS: [&str; 2] = ["approved", "returned"];

fn decisions_schema() -> utoipa::openapi::Object {
    crate::ids::one_of(&DECISIONS)
}

fn choices_schema() -> utoipa::openapi::Object {
    crate::ids::one_of(&["submitted", "other", "value"])
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalInput {
    /// What is approved: one of the programme's `approvals` (`case_plan`, …).
    pub subject: String,
    /// `approved`, or `returned` for changes.
    #[schema(schema_with = decisions_schema)]
    pub decision: String,
    pub note: Option<String>,
    /// When it was decided (default: now).
    pub occurred_at: Option<String>,
}

pub fn approve(
    conn: &mut DbConnection,
    who: &Principal,
    case_id: &str,
    a: &ApprovalInput,
) -> AppResult<Case> {
    let case = case_for(conn, who, case_id)?;
    let programme = programme_of(&case.programme)?;
    if !programme.approvals.iter().any(|s| s.subject == a.subject) {
        let known: Vec<&str> = programme
            .approvals
            .iter()
            .map(|s| s.subject.as_str())
            .collect();
        return Err(AppError::invalid_field(
            "/subject",
            format!(
                "not something this programme approves ({})",
                known.join(", ")
            ),
        ));
    }
    if !DECISIONS.contains(&a.decision.as_str()) {
        return Err(AppError::invalid_field("/decision", "approved or returned"));
    }
    let name = format!("{}_{}", a.subject, a.decision);
    // Only what the case awaits: an approval the workflow has no step for
    // here would be recorded and change nothing.
    if !awaits(&programme, &case.state, &name) {
        return Err(AppError::Conflict(format!(
            "the case ({}) is not awaiting a {} decision",
            case.state, a.subject
        )));
    }
    let occurred_at = when(a.occurred_at.as_deref())?;
    let seq = super::touch(conn, &case)?;
    let detail = json!({ "subject": a.subject, "decision": a.decision, "note": a.note });
    Ok(record(
        conn,
        &case.id,
        seq,
        who,
        &name,
        &occurred_at,
        Map::new(),
        detail,
    )?
    .1)
}

/// Whether the workflow has a step from `state` on the event `name`.
fn awaits(programme: &Programme, state: &str, name: &str) -> bool {
    programme.transitions.iter().any(|t| {
        t.on.as_deref() == Some(name)
            && t.from
                .as_ref()
                .is_none_or(|from| from.iter().any(|f| f == state))
    })
}

/// The approvals a case in `state` awaits: those [`approve`] would take
/// (approved or returned).
pub fn awaited_approvals<'p>(programme: &'p Programme, state: &str) -> Vec<&'p Approval> {
    programme
        .approvals
        .iter()
        .filter(|a| {
            DECISIONS
                .iter()
                .any(|d| awaits(programme, state, &format!("{}_{d}", a.subject)))
        })
        .collect()
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Resolution {
    /// `submitted` (the late submission's value), `other` (the value it
    /// conflicted with) or `value` (a corrected one, given in `value`).
    #[schema(schema_with = choices_schema)]
    pub choice: String,
    pub value: Option<Value>,
    pub note: Option<String>,
}

pub fn conflict(conn: &mut DbConnection, id: &str) -> AppResult<ConflictRow> {
    conflicts::table
        .find(id)
        .select(ConflictRow::as_select())
        .first(conn)
        .optional()?
        .ok_or_else(|| AppError::NotFound("no such conflict".into()))
}

/// Settles a conflict: the chosen value becomes the fact's value from now
/// on, through a `conflict_resolved` event.
pub fn resolve(
    conn: &mut DbConnection,
    who: &Principal,
    conflict_id: &str,
    r: &Resolution,
) -> AppResult<ConflictRow> {
    policy::manage_cases(who)?;
    let found = conflict(conn, conflict_id)?;
    let case = case_for(conn, who, &found.case_id).map_err(|e| e.hidden_as("no such conflict"))?;
    if found.status != OPEN {
        return Err(AppError::Conflict(
            "this conflict is already resolved".into(),
        ));
    }
    let parse = |text: &str| serde_json::from_str::<Value>(text).unwrap_or(Value::Null);
    let chosen = match (r.choice.as_str(), &r.value) {
        ("submitted", None) => parse(&found.event_value),
        ("other", None) => parse(&found.other_value),
        ("value", Some(v)) => v.clone(),
        _ => {
            return Err(AppError::invalid_field(
                "/choice",
                "submitted or other (without value), or value (with value)",
            ))
        }
    };
    let seq = super::touch(conn, &case)?;
    let mut facts = Map::new();
    facts.insert(found.fact.clone(), chosen.clone());
    let detail =
        json!({ "conflict": found.id, "fact": found.fact, "choice": r.choice, "note": r.note });
    let at = when(None)?;
    let (event_id, _) = record(
        conn,
        &case.id,
        seq,
        who,
        CONFLICT_RESOLVED,
        &at,
        facts,
        detail,
    )?;
    diesel::update(conflicts::table.find(conflict_id))
        .set((
            conflicts::status.eq(RESOLVED),
            conflicts::resolved_by.eq(&who.user_id),
            conflicts::resolved_at.eq(now()),
            conflicts::resolution_event_id.eq(&event_id),
        ))
        .execute(conn)?;
    conflict(conn, conflict_id)
}

/// Conflicts of the cases `who` may read (a coordinator's sites, a field
/// worker's cases); open ones unless `all`.
pub fn conflicts_for(
    conn: &mut DbConnection,
    who: &Principal,
    all: bool,
    limit: i64,
) -> AppResult<Vec<ConflictRow>> {
    Ok(conflicts_of(who, all)?
        .select(ConflictRow::as_select())
        .order(conflicts::created_at)
        .limit(limit)
        .load(conn)?)
}

/// How many `conflicts_for` would list without a limit.
pub fn conflicts_count(conn: &mut DbConnection, who: &Principal, all: bool) -> AppResult<i64> {
    Ok(conflicts_of(who, all)?.count().get_result(conn)?)
}

fn conflicts_of<'a>(
    who: &Principal,
    all: bool,
) -> AppResult<conflicts::BoxedQuery<'a, crate::db::MultiBackend>> {
    let mut query = conflicts::table.into_boxed();
    query = match policy::list_cases(who)? {
        CaseScope::Sites(sites) => query.filter(conflicts::site_id.eq_any(sites)),
        CaseScope::Assignee { user_id, site_ids } => {
            use crate::db::schema::cases;
            let mine = cases::table
                .filter(cases::assigned_to.eq(user_id))
                .filter(cases::site_id.eq_any(site_ids))
                .select(cases::id);
            query.filter(conflicts::case_id.eq_any(mine))
        }
    };
    if !all {
        query = query.filter(conflicts::status.eq(OPEN));
    }
    Ok(query)
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SiblingInput {
    /// The case of the sibling, at the same site: its id or its number.
    pub case_id: String,
}

/// Links the children of two cases of one site as siblings.
pub fn link_siblings(
    conn: &mut DbConnection,
    who: &Principal,
    case_id: &str,
    s: &SiblingInput,
) -> AppResult<Case> {
    let case = case_for(conn, who, case_id)?;
    let other = match find(conn, &s.case_id)? {
        Some(other) => Some(other),
        None => super::numbered(conn, &case.site_id, &s.case_id)?,
    }
    .filter(|o| o.site_id == case.site_id)
    .ok_or_else(|| AppError::invalid_field("/case_id", "no such case at this site"))?;
    super::children::link_siblings(conn, &case, &other)?;
    Ok(case)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_case_awaits_the_approvals_its_workflow_has_a_step_for() {
        let kz = programme_of("kz").unwrap();
        let subjects = |state: &str| -> Vec<String> {
            awaited_approvals(&kz, state)
                .into_iter()
                .map(|a| a.subject.clone())
                .collect()
        };
        assert_eq!(subjects("care_plan_awaiting_approval"), ["care_plan"]);
        assert!(subjects("referred").is_empty());
    }
}
