use actix_web::{web, HttpResponse};

use crate::app::AppState;
use crate::crypto::keys;
use crate::programmes::ProgrammeId;
use crate::error::AppResult;
use crate::http::extract::AuthUser;

/// `GET /api/v1/programmes/{programme}/keys/current`: the public JWK phones
/// encrypt submissions for, with its `kid`.
pub async fn current(
    state: web::Data<AppState>,
    AuthUser(_me): AuthUser,
    programme: web::Path<ProgrammeId>,
) -> AppResult<HttpResponse> {
    let key = state
        .db(move |conn| keys::current(conn, &programme))
        .await?;
    Ok(HttpResponse::Ok().json(key.jwk))
}
