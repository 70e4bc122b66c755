use actix_web::{web, HttpResponse};
use serde::Deserialize;

use crate::app::AppState;
use crate::error::AppResult;
use crate::http::extract::AuthUser;
use crate::sync::feed;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncQuery {
    cursor: Option<String>,
}

/// `GET /api/v1/sync?cursor=`: form versions, programme keys and the
/// caller's assigned open cases; with a cursor, only what changed since.
pub async fn get(
    state: web::Data<AppState>,
    AuthUser(me): AuthUser,
    query: web::Query<SyncQuery>,
) -> AppResult<HttpResponse> {
    let cursor = query.into_inner().cursor;
    let feed = state
        .db(move |conn| feed::feed(conn, &me, cursor.as_deref()))
        .await?;
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(feed))
}
