//! A case: the child, its state, deadlines with their verdicts, the
//! timeline, and (for its coordinators) the assignment form. The reads of
//! `GET /api/v1/cases/{id}` and `/timeline`, one `case_read` audit row.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use chrono::Utc;
use serde::Deserialize;
use serde_json::Value;

use crate::app::{AppState, Audited};
use crate::audit::Origin;
use crate::auth::{users, Role};
use crate::cases::actions::{self, Assignment};
use crate::cases::children::{self, Shown};
use crate::cases::views::{self, CaseView, DeadlineView, Timeline};
use crate::cases::CaseId;

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
    assigned_done: bool,
}

struct Read {
    case: CaseView,
    timeline: Timeline,
    child: Option<Shown>,
    names: HashMap<String, String>,
    assignees: Option<Vec<(String, String)>>,
}

#[derive(Deserialize)]
pub struct CaseQuery {
    assigned: Option<String>,
}

/// `GET /cases/{id}[?assigned=1]`.
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
                let (case, access) = views::readable(conn, me, &id, Utc::now())?;
                let what = Audited::object("case", &case.id).detail(access.as_str());
                let child = children::shown(conn, &case)?;
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
                let case = views::view(conn, case, Utc::now())?;
                Ok((
                    Read {
                        case,
                        timeline,
                        child,
                        names,
                        assignees,
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
        assigned_done: query.assigned.is_some(),
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

/// `POST /cases/{id}/assignment`: the API's assignment, audited as
/// `case_assigned`.
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
    let case_id = id.to_string();
    state
        .read_audited(
            origin,
            session.principal,
            "case_assigned",
            move |conn, who| {
                let case = actions::assign(conn, who, &id, &assignment)?;
                let what =
                    Audited::object("case", &case.id).detail(actions::assignment_detail(&case));
                Ok(((), Some(what)))
            },
        )
        .await?;
    Ok(see_other(&format!("/cases/{case_id}?assigned=1")))
}
