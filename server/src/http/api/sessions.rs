use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use crate::app::{AppState, Audited};
use crate::audit::Origin;
use crate::auth::{tokens, users};
use crate::error::Problem;
use crate::error::{AppError, AppResult};
use crate::http::extract::{AnyAuthUser, ApiJson};
use crate::http::sign_in::{self, SignIn, SignedIn};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    username: String,
    password: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct LoginAnswer {
    token: String,
    token_id: String,
    #[serde(serialize_with = "crate::json::utc")]
    expires_at: chrono::NaiveDateTime,
    user: users::User,
    password_change_required: bool,
}

/// `POST /api/v1/sessions`: username and password for a bearer token.
/// The attempt is reserved against the throttle before the password is
/// checked; repeated failures are slowed, then refused for a while (429).
#[utoipa::path(
    post,
    path = "/sessions",
    tag = "sessions",
    security(()),
    request_body = Login,
    responses(
        (status = 201, description = "Signed in: a session token", body = LoginAnswer),
        (status = 401, description = "Wrong username or password", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed logins from this address for this account (`Retry-After`)", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn login(
    state: web::Data<AppState>,
    origin: Origin,
    body: ApiJson<Login>,
) -> AppResult<HttpResponse> {
    let Login { username, password } = body.0;
    match sign_in::sign_in(&state, origin, username, password).await? {
        SignIn::Ok(signed) => {
            let SignedIn {
                token,
                token_id,
                expires_at,
                user,
            } = *signed;
            Ok(HttpResponse::Created().json(LoginAnswer {
                token,
                token_id,
                expires_at,
                password_change_required: user.must_change_password,
                user,
            }))
        }
        SignIn::WrongCredentials => Err(AppError::Unauthorized(
            "the username or password is wrong".into(),
        )),
    }
}

/// `DELETE /api/v1/sessions/current`: revokes the token used for this call.
#[utoipa::path(
    delete,
    path = "/sessions/current",
    tag = "sessions",
    responses((status = 204, description = "The token used for this call is revoked")),
)]
pub async fn logout(
    state: web::Data<AppState>,
    origin: Origin,
    AnyAuthUser(me): AnyAuthUser,
) -> AppResult<HttpResponse> {
    let token_id = me.token_id.clone();
    state
        .audited(origin, me, "logout", move |conn| {
            tokens::revoke(conn, &token_id)?;
            Ok(((), Audited::object("token", token_id.as_str())))
        })
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
