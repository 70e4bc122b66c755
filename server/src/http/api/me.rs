use actix_web::{web, HttpResponse};
use serde::Deserialize;

use crate::app::{AppState, Audited};
use crate::audit::Origin;
use crate::auth::users;
use crate::error::AppResult;
use crate::http::extract::{AnyAuthUser, ApiJson};

/// `GET /api/v1/me`: the caller, their role and sites.
pub async fn show(
    state: web::Data<AppState>,
    AnyAuthUser(me): AnyAuthUser,
) -> AppResult<HttpResponse> {
    let user = state.db(move |conn| users::get(conn, &me.user_id)).await?;
    Ok(HttpResponse::Ok().json(user))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    current_password: String,
    new_password: String,
}

/// `POST /api/v1/me/password`: required before anything else after a
/// one-time password; other sessions of the user stay valid.
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
    let initial_password_file = state.settings.initial_admin_password_path();
    let changed_from = current_password.clone();
    let user_id = me.user_id.clone();
    state
        .audited(origin, me, "password_changed", move |conn| {
            users::change_own_password(conn, &user_id, &current_password, &new_password)?;
            Ok(((), Audited::object("user", user_id.as_str())))
        })
        .await?;
    crate::server::forget_initial_password(&initial_password_file, &changed_from);
    Ok(HttpResponse::NoContent().finish())
}
