//! The audit log, for admins: a filtered page at a time, or all of it as
//! CSV (streamed, and itself audited).

use actix_web::{web, HttpResponse};

use crate::app::{AppState, Audited};
use crate::audit::{self, AuditQuery, Event, Origin};
use crate::auth::{policy, Principal};
use crate::error::{AppResult, Problem};
use crate::http::extract::AuthUser;
use crate::sheet::Formulas;

/// `GET /api/v1/audit?from=&to=&actor=&action=&object_type=&object_id=&cursor=&limit=`
#[utoipa::path(
    get,
    path = "/audit",
    tag = "audit",
    params(AuditQuery),
    responses((status = 200, description = "A page of the audit log, newest first", body = audit::AuditPage), (status = 422, description = "No such actor", body = Problem, content_type = "application/problem+json")),
)]
pub async fn list(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    query: web::Query<AuditQuery>,
) -> AppResult<HttpResponse> {
    let page = read(&state, origin, me, &query).await?;
    Ok(HttpResponse::Ok().json(page))
}

/// A page of the log (`GET /audit`, and the console's audit page), read
/// by an admin and audited as `audit_read`.
pub async fn read(
    state: &AppState,
    origin: Origin,
    me: Principal,
    query: &AuditQuery,
) -> AppResult<audit::AuditPage> {
    policy::read_audit(&me)?;
    let mut filter = query.filter()?;
    let limit = query.limit()?;
    let before = query.cursor()?;
    // Reading the log is itself on it (it holds purposes in people's words).
    let detail = filter.describe();
    state
        .read_audited(origin, me, "audit_read", move |conn, _| {
            filter.resolve_actor(conn)?;
            let page = audit::query(conn, &filter, before, limit)?;
            Ok((
                page,
                Some(Audited::object("audit_log", "query").detail(detail)),
            ))
        })
        .await
}

/// `GET /api/v1/exports/audit.csv?from=&to=&actor=&action=&object_type=&object_id=&formula_escape=`
#[utoipa::path(
    get,
    path = "/exports/audit.csv",
    tag = "audit",
    params(AuditQuery),
    responses((status = 200, description = "The rows as CSV, oldest first", content_type = "text/csv", body = String), (status = 422, description = "No such actor", body = Problem, content_type = "application/problem+json")),
)]
pub async fn export_csv(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    query: web::Query<AuditQuery>,
) -> AppResult<HttpResponse> {
    exported(&state, origin, me, &query).await
}

/// The log as streamed CSV (`GET /exports/audit.csv`, and the console's
/// download), audited as `audit_exported` before the first byte leaves.
pub async fn exported(
    state: &AppState,
    origin: Origin,
    me: Principal,
    query: &AuditQuery,
) -> AppResult<HttpResponse> {
    policy::read_audit(&me)?;
    let filter = query.export_filter()?;
    let formulas = Formulas::from_param(query.formula_escape);
    let detail = match formulas.note() {
        Some(note) => format!("{}; {note}", filter.describe()),
        None => filter.describe(),
    };
    // On record before the first byte leaves, like every export.
    let filter = state
        .db(move |conn| {
            let mut filter = filter;
            filter.resolve_actor(conn)?;
            audit::record(
                conn,
                &origin,
                Event::new(Some(&me), "audit_exported").detail(&detail),
            )?;
            Ok(filter)
        })
        .await?;
    super::exports::stream_csv(state, "audit.csv", move |conn, sink| {
        audit::write_csv(conn, &filter, formulas, sink)
    })
    .await
}
