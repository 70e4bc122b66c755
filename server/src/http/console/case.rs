//! A case: the child, its state, deadlines with their verdicts, the
//! timeline, conflicts, siblings, consents, disclosures, access requests
//! and break-glass grants; for its coordinators the forms that act on it
//! (assign, approve, resolve a conflict, link or dismiss a possible
//! duplicate, link a sibling). The reads of `GET /api/v1/cases/{id}`,
//! `/timeline` and the case's lists, one `case_read` audit row naming what
//! the page showed; each action is the API's own (`api::cases`), audited
//! as the API audits it.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use chrono::Utc;
use serde::Deserialize;
use serde_json::Value;

use crate::app::{AppState, Audited};
use crate::audit::Origin;
use crate::auth::{policy, users, Role};
use crate::cases::actions::{self, ApprovalInput, Assignment, Resolution, SiblingInput};
use crate::cases::break_glass::{self, Grant};
use crate::cases::children::{self, Candidate, DuplicateId, Shown};
use crate::cases::conflicts::{self, ConflictId, ConflictRow};
use crate::cases::reconcile::programme_of;
use crate::cases::views::{self, CaseView, DeadlineView, Timeline};
use crate::cases::CaseId;
use crate::error::{AppError, AppResult};
use crate::http::api::cases as api;
use crate::privacy::access_requests::{self, AccessRequest};
use crate::privacy::consents::{self, ConsentView};
use crate::privacy::disclosures::{self, Disclosure};

use super::i18n::Catalogue;
use super::session::WebUser;
use super::{local_time, see_other, Chrome, WebError};

/// One line of the timeline as the page shows it.
pub struct EventLine {
    pub name: String,
    /// The submission to read, for an event a form made.
    pub form: Option<String>,
    pub occurred_at: String,
    pub recorded_at: String,
    pub recorded_by: String,
    pub superseded: bool,
    pub facts: Vec<(String, String)>,
}

pub struct DeadlineLine {
    pub title: String,
    pub due: String,
    pub status: &'static str,
    pub late: Option<String>,
}

#[derive(Template)]
#[template(path = "case.html")]
struct CasePage {
    chrome: Chrome,
    case: CaseView,
    child: Option<Shown>,
    assigned: Option<String>,
    deadlines: Vec<DeadlineLine>,
    events: Vec<EventLine>,
    /// Who the case may be given to, when the reader may assign it.
    assignees: Option<Vec<(String, String)>>,
    /// What the reader's last action here did (a catalogue key).
    done: Option<&'static str>,
    /// Whether the reader may act on the case (a coordinator of its site).
    manages: bool,
    conflicts: Vec<ConflictRow>,
    /// The approvals the case awaits: (subject, title).
    approvals: Vec<(String, String)>,
    /// Possible duplicates of the child: (pair, the other child's cases).
    duplicates: Vec<(Candidate, Vec<children::CaseRef>)>,
    consents: Vec<ConsentView>,
    /// `None` where the reader's role may not read them.
    disclosures: Option<Vec<Disclosure>>,
    access_requests: Vec<AccessRequest>,
    grants: Option<Vec<Grant>>,
}

struct Read {
    case: CaseView,
    timeline: Timeline,
    child: Option<Shown>,
    names: HashMap<String, String>,
    assignees: Option<Vec<(String, String)>>,
    manages: bool,
    conflicts: Vec<ConflictRow>,
    approvals: Vec<(String, String)>,
    duplicates: Vec<(Candidate, Vec<children::CaseRef>)>,
    consents: Vec<ConsentView>,
    disclosures: Option<Vec<Disclosure>>,
    access_requests: Vec<AccessRequest>,
    grants: Option<Vec<Grant>>,
}

/// What the page shows besides the case itself, for the `case_read` row.
const SHOWN: &str = "child, timeline, conflicts, approvals, possible duplicates, siblings, \
     consents, disclosures, access requests, break-glass grants";

#[derive(Deserialize)]
pub struct CaseQuery {
    done: Option<String>,
}

/// The notices a finished action leaves (`?done=`), as catalogue keys.
fn notice(done: Option<&str>) -> Option<&'static str> {
    Some(match done? {
        "assigned" => "case.assigned_done",
        "approved" => "case.approval_done",
        "resolved" => "case.resolved_done",
        "linked" => "case.duplicate_linked",
        "dismissed" => "case.duplicate_dismissed",
        "siblings" => "case.siblings_done",
        _ => return None,
    })
}

/// A list the reader's role may not read is left off the page, as the
/// API refuses it; any other failure is the page's.
fn if_allowed<T>(read: AppResult<T>) -> AppResult<Option<T>> {
    match read {
        Ok(v) => Ok(Some(v)),
        Err(AppError::Forbidden(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `GET /cases/{id}[?done=assigned|approved|resolved|…]`.
pub async fn page(
    req: HttpRequest,
    state: web::Data<AppState>,
    origin: Origin,
    WebUser(session): WebUser,
    id: web::Path<CaseId>,
    query: web::Query<CaseQuery>,
) -> Result<HttpResponse, WebError> {
    let t = Catalogue::of(&req);
    let read = state
        .read_audited(
            origin,
            session.principal.clone(),
            "case_read",
            move |conn, me| {
                let now = Utc::now();
                let (case, access) = views::readable(conn, me, &id, now)?;
                let what = Audited::object("case", &case.id)
                    .detail(format!("{}; console: {SHOWN}", access.as_str()));
                let manages = policy::manage_case(me, case.scope()).is_ok();
                let child = children::shown(conn, &case)?;
                let conflicts = conflicts::of_case(conn, &case.id)?;
                let approvals = if manages {
                    let programme = programme_of(&case.programme)?;
                    actions::awaited_approvals(&programme, &case.state)
                        .into_iter()
                        .map(|a| (a.subject.clone(), a.title.clone()))
                        .collect()
                } else {
                    Vec::new()
                };
                let duplicates = match (&case.child_id, manages) {
                    (Some(child_id), true) => {
                        children::candidates_of_child(conn, me, &case.site_id, child_id)?
                            .into_iter()
                            .map(|pair| {
                                let other = if &pair.child.child_id == child_id {
                                    pair.other_child.cases.clone()
                                } else {
                                    pair.child.cases.clone()
                                };
                                (pair, other)
                            })
                            .collect()
                    }
                    _ => Vec::new(),
                };
                let consents = consents::list(conn, me, &case.id, now)?;
                let disclosures = if_allowed(disclosures::list(conn, me, Some(&case.id)))?;
                let access_requests = access_requests::list(conn, &case)?;
                let grants = if_allowed(break_glass::list(conn, me, Some(&case.id), now))?;
                let timeline = views::timeline(conn, &case, Utc::now())?;
                let staff = users::list(conn, Some(std::slice::from_ref(&case.site_id)))?;
                let names = staff
                    .iter()
                    .map(|u| (u.id.clone(), u.username.clone()))
                    .collect();
                let assignees = (me.role == Role::Coordinator).then(|| {
                    staff
                        .iter()
                        .filter(|u| {
                            u.active && matches!(u.role, Role::FieldWorker | Role::Coordinator)
                        })
                        .map(|u| (u.id.clone(), u.username.clone()))
                        .collect()
                });
                let case = views::view(conn, case, now)?;
                Ok((
                    Read {
                        case,
                        timeline,
                        child,
                        names,
                        assignees,
                        manages,
                        conflicts,
                        approvals,
                        duplicates,
                        consents,
                        disclosures,
                        access_requests,
                        grants,
                    },
                    Some(what),
                ))
            },
        )
        .await?;
    let name_of = |id: &str| {
        read.names
            .get(id)
            .cloned()
            .unwrap_or_else(|| id.to_string())
    };
    let deadlines = read
        .case
        .deadlines
        .iter()
        .map(|d| deadline_line(d, t))
        .collect();
    let events = read
        .timeline
        .events
        .iter()
        .map(|e| EventLine {
            name: e.name.clone(),
            form: (e.kind == crate::cases::timeline::SUBMISSION).then(|| e.id.clone()),
            occurred_at: local_time(&e.occurred_at),
            recorded_at: e.recorded_at.format("%Y-%m-%d %H:%M UTC").to_string(),
            recorded_by: name_of(&e.recorded_by),
            superseded: e.superseded,
            facts: e
                .facts
                .iter()
                .map(|(k, v)| (k.clone(), fact_text(v)))
                .collect(),
        })
        .collect();
    let body = CasePage {
        chrome: Chrome::signed_in(&req, &session),
        assigned: read.case.assigned_to.as_deref().map(name_of),
        case: read.case,
        child: read.child,
        deadlines,
        events,
        assignees: read.assignees,
        done: notice(query.done.as_deref()),
        manages: read.manages,
        conflicts: read.conflicts,
        approvals: read.approvals,
        duplicates: read.duplicates,
        consents: read.consents,
        disclosures: read.disclosures,
        access_requests: read.access_requests,
        grants: read.grants,
    };
    super::page(StatusCode::OK, &body)
}

fn deadline_line(d: &DeadlineView, t: &Catalogue) -> DeadlineLine {
    let status = match serde_json::to_value(d.status)
        .ok()
        .as_ref()
        .and_then(Value::as_str)
    {
        Some("overdue") => "status.overdue",
        Some("due_soon") => "status.due_soon",
        Some("met_on_time") => "status.met_on_time",
        Some("met_late") => "status.met_late",
        Some("missed") => "status.missed",
        Some("not_applicable") => "status.not_applicable",
        _ => "status.upcoming",
    };
    DeadlineLine {
        title: d.title.clone(),
        due: local_time(&d.due_local),
        status,
        late: d.late.map(|late| super::today::late_in_words(late, t)),
    }
}

/// A recorded fact as text: strings as they are, the rest as JSON.
fn fact_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        other => other.to_string(),
    }
}

#[derive(Deserialize)]
pub struct AssignForm {
    csrf: String,
    /// A user id; empty to leave the case unassigned.
    assignee: String,
}

/// `POST /cases/{id}/assignment`: the API's assignment (`case_assigned`).
pub async fn assign(
    state: web::Data<AppState>,
    origin: Origin,
    WebUser(session): WebUser,
    id: web::Path<CaseId>,
    form: web::Form<AssignForm>,
) -> Result<HttpResponse, WebError> {
    session.check_csrf(&form.csrf)?;
    let assignment = Assignment {
        assignee: Some(form.assignee.clone()).filter(|a| !a.is_empty()),
        note: None,
        occurred_at: None,
    };
    let case = api::assigned(
        &state,
        origin,
        session.principal,
        id.into_inner(),
        assignment,
    )
    .await?;
    Ok(back_to(&case.id, "assigned"))
}

/// Back to the case page, saying what was done (to Today when the id
/// sent is not one: never a redirect elsewhere).
fn back_to(case_id: &str, done: &str) -> HttpResponse {
    if case_id.is_empty()
        || !case_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return see_other("/today");
    }
    see_other(&format!("/cases/{case_id}?done={done}"))
}

/// A note as typed: blank is none.
fn note(text: &str) -> Option<String> {
    Some(text.trim().to_string()).filter(|n| !n.is_empty())
}

#[derive(Deserialize)]
pub struct ApprovalForm {
    csrf: String,
    subject: String,
    /// `approved` or `returned`.
    decision: String,
    #[serde(default)]
    note: String,
}

/// `POST /cases/{id}/approvals`: the API's approval (`case_approval`).
pub async fn approve(
    state: web::Data<AppState>,
    origin: Origin,
    WebUser(session): WebUser,
    id: web::Path<CaseId>,
    form: web::Form<ApprovalForm>,
) -> Result<HttpResponse, WebError> {
    session.check_csrf(&form.csrf)?;
    let form = form.into_inner();
    let approval = ApprovalInput {
        subject: form.subject,
        decision: form.decision,
        note: note(&form.note),
        occurred_at: None,
    };
    let case = api::approved(&state, origin, session.principal, id.into_inner(), approval).await?;
    Ok(back_to(&case.id, "approved"))
}

#[derive(Deserialize)]
pub struct ResolutionForm {
    csrf: String,
    /// `submitted`, `other` or `value`.
    choice: String,
    /// The corrected value, with `value`.
    #[serde(default)]
    value: String,
    #[serde(default)]
    note: String,
}

/// `POST /conflicts/{id}/resolution`: the API's resolution
/// (`conflict_resolved`).
pub async fn resolve(
    state: web::Data<AppState>,
    origin: Origin,
    WebUser(session): WebUser,
    id: web::Path<ConflictId>,
    form: web::Form<ResolutionForm>,
) -> Result<HttpResponse, WebError> {
    session.check_csrf(&form.csrf)?;
    let form = form.into_inner();
    let value = (form.choice == "value").then(|| typed_value(&form.value));
    let resolution = Resolution {
        choice: form.choice,
        value,
        note: note(&form.note),
    };
    let resolved = api::resolved(
        &state,
        origin,
        session.principal,
        id.into_inner(),
        resolution,
    )
    .await?;
    Ok(back_to(&resolved.case_id, "resolved"))
}

/// A value typed in a text box, as the API would take it in JSON: a
/// number, `true`/`false` or JSON as such, anything else as text.
fn typed_value(text: &str) -> Value {
    let text = text.trim();
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

#[derive(Deserialize)]
pub struct DuplicateForm {
    csrf: String,
    /// The case page the decision was made from, to go back to.
    case: CaseId,
}

/// `POST /children/duplicates/{id}/{link|dismiss}`: the API's decision
/// (`children_linked` or `duplicate_dismissed`).
pub async fn decide_duplicate(
    state: web::Data<AppState>,
    origin: Origin,
    WebUser(session): WebUser,
    path: web::Path<(DuplicateId, String)>,
    form: web::Form<DuplicateForm>,
) -> Result<HttpResponse, WebError> {
    session.check_csrf(&form.csrf)?;
    let (id, decision) = path.into_inner();
    let link = match decision.as_str() {
        "link" => true,
        "dismiss" => false,
        _ => return Err(AppError::NotFound("link or dismiss".into()).into()),
    };
    api::duplicate_decided(&state, origin, session.principal, id, link).await?;
    Ok(back_to(
        &form.case,
        if link { "linked" } else { "dismissed" },
    ))
}

#[derive(Deserialize)]
pub struct SiblingForm {
    csrf: String,
    /// The sibling's case number, as the programme writes it.
    number: String,
}

/// `POST /cases/{id}/siblings`: the API's link (`siblings_linked`), the
/// other case named by its number at this case's site.
pub async fn link_siblings(
    state: web::Data<AppState>,
    origin: Origin,
    WebUser(session): WebUser,
    id: web::Path<CaseId>,
    form: web::Form<SiblingForm>,
) -> Result<HttpResponse, WebError> {
    session.check_csrf(&form.csrf)?;
    let sibling = SiblingInput {
        case_id: form.number.trim().to_string(),
    };
    let case =
        api::siblings_linked(&state, origin, session.principal, id.into_inner(), sibling).await?;
    Ok(back_to(&case.id, "siblings"))
}
