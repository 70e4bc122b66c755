use actix_web::{web, HttpResponse};
use serde::Deserialize;

use crate::app::AppState;
use crate::audit::Origin;
use crate::error::AppResult;
use crate::http::extract::AuthUser;
use crate::sync::feed;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SyncQuery {
    /// The `cursor` of the last answer; absent for everything.
    cursor: Option<String>,
}

/// `GET /api/v1/sync?cursor=`: form versions, programme keys and the
/// caller's assigned open cases; with a cursor, only what changed since.
#[utoipa::path(
    get,
    path = "/sync",
    tag = "sync",
    params(SyncQuery),
    responses((status = 200, description = "Form versions, programme keys and the caller's open assigned cases (or what changed since the cursor)", body = feed::Feed)),
)]
pub async fn get(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    query: web::Query<SyncQuery>,
) -> AppResult<HttpResponse> {
    let cursor = query.into_inner().cursor;
    let who = me.clone();
    let feed = state
        .db(move |conn| feed::feed(conn, &who, cursor.as_deref()))
        .await?;
    // Cases on a phone are case content read: audited, by number of
    // cases (a sync with none reads none and writes nothing). The
    // committer appends the row with its next group and the answer does
    // not wait behind the submissions queued there (#19 item 7).
    if !feed.cases.is_empty() {
        let detail = format!("{} cases", feed.cases.len());
        state
            .committer
            .audit_soon(me, origin, "cases_synced", detail);
    }
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(feed))
}
