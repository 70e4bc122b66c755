use actix_web::{web, HttpResponse};

use crate::app::AppState;
use crate::auth::sites::ProgrammeCode;
use crate::crypto::keys;
use crate::error::AppResult;
use crate::error::Problem;
use crate::http::extract::AuthUser;
use crate::programmes::ProgrammeId;

/// `GET /api/v1/programmes/{programme}/keys/current`: the public JWK phones
/// encrypt submissions for, with its `kid`.
#[utoipa::path(
    get,
    path = "/programmes/{programme}/keys/current",
    tag = "programmes",
    params(("programme" = ProgrammeCode, Path)),
    responses(
        (status = 200, description = "The public JWK phones encrypt submissions for", body = Object),
        (status = 404, description = "No such programme key, or one the caller may not see", body = Problem, content_type = "application/problem+json"),
    ),
)]
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
