use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use crate::app::{AppState, Audited};
use crate::audit::Origin;
use crate::auth::tokens::TokenId;
use crate::auth::{tokens, users};
use crate::error::Problem;
use crate::error::{AppError, AppResult};
use crate::http::extract::{AnyAuthUser, ApiJson, AuthUser};
use crate::http::sign_in;

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Me {
    #[serde(flatten)]
    user: users::User,
    /// The caller's device tokens (never their secrets), to revoke a lost
    /// phone's with `DELETE /me/tokens/{id}`.
    device_tokens: Vec<tokens::TokenInfo>,
}

/// `GET /api/v1/me`: the caller, their role and sites, their device tokens.
#[utoipa::path(
    get,
    path = "/me",
    tag = "me",
    responses((status = 200, description = "The caller", body = Me)),
)]
pub async fn show(
    state: web::Data<AppState>,
    AnyAuthUser(me): AnyAuthUser,
) -> AppResult<HttpResponse> {
    let answer = state
        .db(move |conn| {
            let user = users::get(conn, &me.user_id)?;
            let device_tokens = tokens::list_devices(conn, Some(&[me.user_id]))?;
            Ok(Me {
                user,
                device_tokens,
            })
        })
        .await?;
    Ok(HttpResponse::Ok().json(answer))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    current_password: String,
    new_password: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct FreshSession {
    token: String,
    token_id: String,
    #[serde(serialize_with = "crate::json::utc")]
    expires_at: chrono::NaiveDateTime,
}

/// `POST /api/v1/me/password`: the only thing a session opened with a
/// one-time password may do besides `/me` and logout. Every session of the
/// user ends, this one included; the answer carries a fresh session token.
#[utoipa::path(
    post,
    path = "/me/password",
    tag = "me",
    request_body = PasswordChange,
    responses(
        (status = 200, description = "Changed: every session ended; a fresh one", body = FreshSession),
        (status = 422, description = "The current password is wrong, or the new one is not acceptable", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn change_password(
    state: web::Data<AppState>,
    origin: Origin,
    AnyAuthUser(me): AnyAuthUser,
    body: ApiJson<PasswordChange>,
) -> AppResult<HttpResponse> {
    let PasswordChange {
        current_password,
        new_password,
    } = body.0;
    let issued =
        sign_in::change_password(&state, origin, me, current_password, new_password).await?;
    Ok(HttpResponse::Ok().json(FreshSession {
        token: issued.token,
        token_id: issued.info.id,
        expires_at: issued.info.expires_at,
    }))
}

/// `DELETE /api/v1/me/tokens/{id}`: revokes one of the caller's own tokens
/// (a lost phone's); another user's token is not found.
#[utoipa::path(
    delete,
    path = "/me/tokens/{id}",
    tag = "me",
    params(("id" = TokenId, Path, description = "One of the caller's tokens")),
    responses(
        (status = 200, description = "The token, revoked", body = tokens::TokenInfo),
        (status = 404, description = "The caller has no such token", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn revoke_token(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    id: web::Path<TokenId>,
) -> AppResult<HttpResponse> {
    let owner = me.user_id.clone();
    let revoked = state
        .audited(origin, me, "token_revoked", move |conn| {
            let token = tokens::get(conn, &id)?;
            if token.user_id != owner {
                return Err(AppError::NotFound(format!(
                    "you have no token with id {id:?}"
                )));
            }
            let revoked = tokens::revoke(conn, &id)?;
            Ok((revoked, Audited::object("token", id.as_str())))
        })
        .await?;
    Ok(HttpResponse::Ok().json(revoked))
}
