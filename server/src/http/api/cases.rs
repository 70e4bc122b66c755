//! Cases, their timelines, deadlines and conflicts: thin handlers over
//! `cases::views` (reads, audited) and `cases::actions` (changes, audited
//! in the same transaction).

use actix_web::{web, HttpResponse};
use chrono::Utc;
use serde::Deserialize;

use crate::app::{AppState, Audited};
use crate::audit::{self, Event, Origin};
use crate::cases::actions::{self, ApprovalInput, Assignment, Resolution};
use crate::cases::views::{self, CaseFilter, DeadlineFilter};
use crate::db::write_tx;
use crate::error::AppResult;
use crate::http::extract::{ApiJson, AuthUser};

/// `GET /api/v1/cases?programme=&site=&state=&assignee=&overdue=&cursor=`
pub async fn list(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    filter: web::Query<CaseFilter>,
) -> AppResult<HttpResponse> {
    let page = state
        .db(move |conn| {
            write_tx(conn, |conn| {
                let page = views::list(conn, &me, &filter, Utc::now())?;
                audit::record(conn, &origin, Event::new(Some(&me), "cases_listed"))?;
                Ok(page)
            })
        })
        .await?;
    Ok(HttpResponse::Ok().json(page))
}

/// `GET /api/v1/cases/{id}`: state, facts, deadlines.
pub async fn show(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    id: web::Path<String>,
) -> AppResult<HttpResponse> {
    let view = state
        .db(move |conn| {
            write_tx(conn, |conn| {
                let case = views::readable(conn, &me, &id)?;
                audit::record(
                    conn,
                    &origin,
                    Event::new(Some(&me), "case_read").object("case", &case.id),
                )?;
                views::view(conn, case, Utc::now())
            })
        })
        .await?;
    Ok(HttpResponse::Ok().json(view))
}

/// `GET /api/v1/cases/{id}/timeline`: events in the order they happened,
/// and the deadlines.
pub async fn timeline(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    id: web::Path<String>,
) -> AppResult<HttpResponse> {
    let timeline = state
        .db(move |conn| {
            write_tx(conn, |conn| {
                let case = views::readable(conn, &me, &id)?;
                audit::record(
                    conn,
                    &origin,
                    Event::new(Some(&me), "case_timeline_read").object("case", &case.id),
                )?;
                views::timeline(conn, &case, Utc::now())
            })
        })
        .await?;
    Ok(HttpResponse::Ok().json(timeline))
}

/// `POST /api/v1/cases/{id}/assignment` (coordinator): `{"assignee": id|null}`
pub async fn assign(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    id: web::Path<String>,
    body: ApiJson<Assignment>,
) -> AppResult<HttpResponse> {
    let who = me.clone();
    let case = state
        .audited(origin, me, "case_assigned", move |conn| {
            let case = actions::assign(conn, &who, &id, &body.0)?;
            let what = Audited::object("case", &case.id).detail(
                case.assigned_to
                    .clone()
                    .unwrap_or_else(|| "unassigned".into()),
            );
            Ok((case, what))
        })
        .await?;
    let view = state
        .db(move |conn| views::view(conn, case, Utc::now()))
        .await?;
    Ok(HttpResponse::Ok().json(view))
}

/// `POST /api/v1/cases/{id}/approvals` (coordinator):
/// `{"subject": "case_plan", "decision": "approved"|"returned", "note"}`
pub async fn approve(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    id: web::Path<String>,
    body: ApiJson<ApprovalInput>,
) -> AppResult<HttpResponse> {
    let who = me.clone();
    let case = state
        .audited(origin, me, "case_approval", move |conn| {
            let case = actions::approve(conn, &who, &id, &body.0)?;
            let what = Audited::object("case", &case.id)
                .detail(format!("{} {}", body.0.subject, body.0.decision));
            Ok((case, what))
        })
        .await?;
    let view = state
        .db(move |conn| views::view(conn, case, Utc::now()))
        .await?;
    Ok(HttpResponse::Ok().json(view))
}

/// `GET /api/v1/deadlines?status=overdue|due_soon|upcoming&site=&assignee=`
pub async fn deadlines(
    state: web::Data<AppState>,
    AuthUser(me): AuthUser,
    filter: web::Query<DeadlineFilter>,
) -> AppResult<HttpResponse> {
    let items = state
        .db(move |conn| views::due(conn, &me, &filter, Utc::now()))
        .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": items })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConflictQuery {
    /// Resolved ones too.
    all: Option<bool>,
}

/// `GET /api/v1/conflicts[?all=true]`
pub async fn conflicts(
    state: web::Data<AppState>,
    AuthUser(me): AuthUser,
    query: web::Query<ConflictQuery>,
) -> AppResult<HttpResponse> {
    let all = query.all.unwrap_or(false);
    let items = state
        .db(move |conn| actions::conflicts_for(conn, &me, all))
        .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": items })))
}

/// `POST /api/v1/conflicts/{id}/resolution` (coordinator):
/// `{"choice": "submitted"|"other"|"value", "value", "note"}`
pub async fn resolve(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    id: web::Path<String>,
    body: ApiJson<Resolution>,
) -> AppResult<HttpResponse> {
    let who = me.clone();
    let resolved = state
        .audited(origin, me, "conflict_resolved", move |conn| {
            let resolved = actions::resolve(conn, &who, &id, &body.0)?;
            let what = Audited::object("conflict", &resolved.id).detail(&body.0.choice);
            Ok((resolved, what))
        })
        .await?;
    Ok(HttpResponse::Ok().json(resolved))
}
