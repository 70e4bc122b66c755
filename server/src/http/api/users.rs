use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use super::Items;
use crate::app::{AppState, Audited};
use crate::audit::Origin;
use crate::auth::users::UserId;
use crate::auth::{policy, users, Principal};
use crate::db::DbConnection;
use crate::error::Problem;
use crate::error::{AppError, AppResult};
use crate::http::extract::{ApiJson, AuthUser};

/// `GET /api/v1/users`: admins see everyone, coordinators their sites' staff.
#[utoipa::path(
    get,
    path = "/users",
    tag = "users",
    responses((status = 200, description = "Admins: every user; coordinators: their sites' staff", body = Items<users::User>)),
)]
pub async fn list(state: web::Data<AppState>, AuthUser(me): AuthUser) -> AppResult<HttpResponse> {
    let list = listed(&state, &me).await?;
    Ok(HttpResponse::Ok().json(super::Items::new(list)))
}

/// The users `me` may see (the read of `GET /users`, and of the console's
/// people page): admins everyone, coordinators their sites' staff.
pub async fn listed(state: &AppState, me: &Principal) -> AppResult<Vec<users::User>> {
    let scope = policy::visible_user_sites(me)?;
    state
        .db(move |conn| users::list(conn, scope.as_deref()))
        .await
}

/// The user `id` as `me` may see them (`GET /users/{id}`): a user of no
/// site of a coordinator's is told as missing (#16).
pub fn visible(conn: &mut DbConnection, me: &Principal, id: &str) -> AppResult<users::User> {
    policy::visible_user_sites(me)?;
    let user = users::get(conn, id)?;
    policy::may_manage_user_at(me, &user.site_ids)
        .map_err(|_| AppError::Hidden(format!("no user with id {id:?}")))?;
    Ok(user)
}

/// `GET /api/v1/users/{id}`
#[utoipa::path(
    get,
    path = "/users/{id}",
    tag = "users",
    params(("id" = UserId, Path)),
    responses((status = 200, description = "The user", body = users::User), (status = 404, description = "No such user, or one the caller may not see", body = Problem, content_type = "application/problem+json")),
)]
pub async fn show(
    state: web::Data<AppState>,
    AuthUser(me): AuthUser,
    id: web::Path<UserId>,
) -> AppResult<HttpResponse> {
    policy::visible_user_sites(&me)?;
    let user = state.db(move |conn| visible(conn, &me, &id)).await?;
    Ok(HttpResponse::Ok().json(user))
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct CreatedUser {
    user: users::User,
    /// Shown once; the user must change it at first login.
    #[serde(skip_serializing_if = "Option::is_none")]
    one_time_password: Option<String>,
}

/// `POST /api/v1/users` (admin)
#[utoipa::path(
    post,
    path = "/users",
    tag = "users",
    request_body = users::NewUser,
    responses(
        (status = 201, description = "Created; the one-time password when none was given", body = CreatedUser),
        (status = 409, description = "The username is taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The user is not valid (each problem with its pointer)", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn create(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    body: ApiJson<users::NewUser>,
) -> AppResult<HttpResponse> {
    let created = created(&state, origin, me, body.0).await?;
    Ok(HttpResponse::Created().json(CreatedUser {
        user: created.user,
        one_time_password: created.one_time_password,
    }))
}

/// An admin creates a user (`POST /users`, and the console), audited as
/// `user_created`.
pub async fn created(
    state: &AppState,
    origin: Origin,
    me: Principal,
    new: users::NewUser,
) -> AppResult<users::Created> {
    policy::administer(&me, "create users")?;
    let mut new = new;
    let password = state.hashed_password(new.password.take()).await?;
    state
        .audited(origin, me, "user_created", move |conn| {
            let created = users::create(conn, new, password)?;
            let what = Audited::object("user", &created.user.id).detail(created.user.role.as_str());
            Ok((created, what))
        })
        .await
}

/// `PATCH /api/v1/users/{id}` (admin): name, role, sites, active.
#[utoipa::path(
    patch,
    path = "/users/{id}",
    tag = "users",
    params(("id" = UserId, Path)),
    request_body = users::UserChanges,
    responses((status = 200, description = "The user, changed", body = users::User), (status = 404, description = "No such user, or one the caller may not see", body = Problem, content_type = "application/problem+json"), (status = 422, description = "A change is not valid", body = Problem, content_type = "application/problem+json")),
)]
pub async fn update(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    id: web::Path<UserId>,
    body: ApiJson<users::UserChanges>,
) -> AppResult<HttpResponse> {
    let user = updated(&state, origin, me, id.to_string(), body.0).await?;
    Ok(HttpResponse::Ok().json(user))
}

/// An admin changes a user's name, role, sites or standing (`PATCH
/// /users/{id}`, and the console), audited as `user_updated`.
pub async fn updated(
    state: &AppState,
    origin: Origin,
    me: Principal,
    id: String,
    changes: users::UserChanges,
) -> AppResult<users::User> {
    policy::administer(&me, "change users")?;
    state
        .audited(origin, me, "user_updated", move |conn| {
            let described = describe_changes(&changes);
            let user = crate::cases::update_user(conn, &id, changes)?;
            let what = Audited::object("user", &user.id).detail(described);
            Ok((user, what))
        })
        .await
}

fn describe_changes(c: &users::UserChanges) -> String {
    let mut parts = Vec::new();
    if c.display_name.is_some() {
        parts.push("display_name".to_string());
    }
    if c.initials.is_some() {
        parts.push("initials".to_string());
    }
    if let Some(role) = c.role {
        parts.push(format!("role={role}"));
    }
    if c.site_ids.is_some() {
        parts.push("site_ids".to_string());
    }
    if let Some(active) = c.active {
        parts.push(format!("active={active}"));
    }
    parts.join(",")
}

/// A generated password, shown once; it must be changed at next login.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct OneTimePassword {
    one_time_password: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reset {
    /// When absent a one-time password is generated and returned once.
    #[serde(default)]
    #[schema(min_length = 10, max_length = 256)]
    password: Option<String>,
}

/// `POST /api/v1/users/{id}/password` (admin): reset; every token of the
/// user stops working and the new password must be changed at next login.
#[utoipa::path(
    post,
    path = "/users/{id}/password",
    tag = "users",
    params(("id" = UserId, Path)),
    request_body = Reset,
    responses(
        (status = 200, description = "The generated one-time password", body = OneTimePassword),
        (status = 204, description = "The password given is set (to be changed at next login)"),
        (status = 404, description = "No such user, or one the caller may not see", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The password is not acceptable", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn reset_password(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    id: web::Path<UserId>,
    body: ApiJson<Reset>,
) -> AppResult<HttpResponse> {
    Ok(
        match password_reset(&state, origin, me, id.to_string(), body.0.password).await? {
            Some(one_time_password) => {
                HttpResponse::Ok().json(OneTimePassword { one_time_password })
            }
            None => HttpResponse::NoContent().finish(),
        },
    )
}

/// An admin resets a user's password (`POST /users/{id}/password`, and the
/// console), audited as `password_reset`: `chosen`, or a generated one
/// handed back once. Every token of the user stops working.
pub async fn password_reset(
    state: &AppState,
    origin: Origin,
    me: Principal,
    id: String,
    chosen: Option<String>,
) -> AppResult<Option<String>> {
    policy::administer(&me, "reset passwords")?;
    let new = state.hashed_password(chosen).await?;
    let new = state
        .audited(origin, me, "password_reset", move |conn| {
            users::reset_password(conn, &id, &new)?;
            Ok((new, Audited::object("user", id.as_str())))
        })
        .await?;
    Ok(new.generated.then_some(new.plain))
}
