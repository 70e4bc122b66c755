use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use crate::app::{AppState, Audited};
use crate::audit::{self, Event, Origin};
use crate::auth::{passwords, throttle, tokens, users};
use crate::db::write_tx;
use crate::error::Problem;
use crate::error::{AppError, AppResult};
use crate::http::extract::{AnyAuthUser, ApiJson};

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

/// Why a login failed, decided off the async workers.
enum Outcome {
    Ok(Box<LoginAnswer>),
    WrongCredentials,
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
    let keys = throttle::Keys::new(&username, origin.client_ip.as_deref().unwrap_or("unknown"));
    let rules = state.settings.login.clone();

    let verdict = {
        let keys = keys.clone();
        state
            .db(move |conn| throttle::reserve(conn, &keys, &rules, crate::time::now()))
            .await?
    };
    match verdict {
        throttle::Verdict::Locked { retry_after_secs } => {
            let origin = origin.clone();
            state
                .db(move |conn| {
                    audit::record(
                        conn,
                        &origin,
                        Event::new(None, "login_refused").detail("throttled"),
                    )
                })
                .await?;
            return Err(AppError::TooManyRequests { retry_after_secs });
        }
        throttle::Verdict::Allow(delay) if !delay.is_zero() => tokio::time::sleep(delay).await,
        throttle::Verdict::Allow(_) => {}
    }

    let ttl = state.settings.session_ttl_hours;
    let outcome = state
        .db(move |conn| {
            let found = users::credentials(conn, &username)?;
            // Verify against a decoy when the user is unknown, so the answer
            // takes as long and says as little either way.
            let (user_id, hash) = match &found {
                Some((id, hash)) => (Some(id.clone()), hash.as_str()),
                None => (None, passwords::decoy_hash()),
            };
            let password_ok = passwords::verify(&password, hash);
            write_tx(conn, |conn| match user_id.filter(|_| password_ok) {
                None => {
                    // The attempt already counts as failed (reserved above);
                    // one row per password verified and found wrong.
                    audit::record(conn, &origin, Event::new(None, "login_failed"))?;
                    Ok(Outcome::WrongCredentials)
                }
                Some(user_id) => {
                    throttle::release(conn, &keys)?;
                    let issued = tokens::issue_session(conn, &user_id, ttl)?;
                    let user = users::get(conn, &user_id)?;
                    audit::record(
                        conn,
                        &origin,
                        Event::new(None, "login").object("user", &user_id),
                    )?;
                    Ok(Outcome::Ok(Box::new(LoginAnswer {
                        token: issued.token,
                        token_id: issued.info.id,
                        expires_at: issued.info.expires_at,
                        password_change_required: user.must_change_password,
                        user,
                    })))
                }
            })
        })
        .await?;
    match outcome {
        Outcome::Ok(answer) => Ok(HttpResponse::Created().json(answer)),
        Outcome::WrongCredentials => Err(AppError::Unauthorized(
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
