use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::Items;
use crate::app::{AppState, Audited};
use crate::audit::Origin;
use crate::auth::collect_settings::{self, CollectSettings};
use crate::auth::tokens::TokenId;
use crate::auth::{policy, tokens, users, Principal};
use crate::db::DbConnection;
use crate::error::AppResult;
use crate::error::Problem;
use crate::http::extract::{ApiJson, AuthUser};

/// `GET /api/v1/tokens`: device tokens (admins: all; coordinators: those of
/// their sites' field workers). Never the secrets.
#[utoipa::path(
    get,
    path = "/tokens",
    tag = "tokens",
    responses((status = 200, description = "Device tokens (never their secrets)", body = Items<tokens::TokenInfo>)),
)]
pub async fn list(state: web::Data<AppState>, AuthUser(me): AuthUser) -> AppResult<HttpResponse> {
    policy::visible_user_sites(&me)?;
    let list = state.db(move |conn| visible(conn, &me, None)).await?;
    Ok(HttpResponse::Ok().json(super::Items::new(list)))
}

/// The device tokens `me` may see (`GET /tokens`; admins: all,
/// coordinators: those of their sites' staff), only `of_user`'s when given
/// (the console's page of a person).
pub fn visible(
    conn: &mut DbConnection,
    me: &Principal,
    of_user: Option<&str>,
) -> AppResult<Vec<tokens::TokenInfo>> {
    let of_users = match policy::visible_user_sites(me)? {
        None => of_user.map(|u| vec![u.to_string()]),
        Some(sites) => Some(
            users::list(conn, Some(&sites))?
                .into_iter()
                .map(|u| u.id)
                .filter(|id| of_user.is_none_or(|u| u == id))
                .collect::<Vec<_>>(),
        ),
    };
    tokens::list_devices(conn, of_users.as_deref())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDeviceToken {
    user_id: String,
    label: String,
    #[serde(default)]
    expires_in_days: Option<i64>,
}

/// `POST /api/v1/tokens`: a device token for a field worker's phone; the
/// secret is in this answer only.
#[utoipa::path(
    post,
    path = "/tokens",
    tag = "tokens",
    request_body = NewDeviceToken,
    responses(
        (status = 201, description = "The device token; its secret is in this answer only", body = tokens::Issued),
        (status = 404, description = "No such user, or one the caller may not see", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a field worker, or the lifetime is over the cap", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn create(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    body: ApiJson<NewDeviceToken>,
) -> AppResult<HttpResponse> {
    policy::visible_user_sites(&me)?;
    let max_days = state.settings.device_token_ttl_days;
    let ttl_days = body.0.expires_in_days.unwrap_or(max_days);
    let actor = me.clone();
    let issued = state
        .audited(origin, actor, "device_token_created", move |conn| {
            let request = body.0;
            if let Ok(user) = users::get(conn, &request.user_id) {
                policy::issue_device_token_for(&me, &user.site_ids)?;
            }
            let issued = tokens::issue_device(
                conn,
                &request.user_id,
                &request.label,
                Some(&me.user_id),
                ttl_days,
                max_days,
            )?;
            let what = Audited::object("token", &issued.info.id).detail(request.user_id);
            Ok((issued, what))
        })
        .await?;
    Ok(HttpResponse::Created().json(issued))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCollectToken {
    pub user_id: String,
    pub label: String,
    #[serde(default)]
    pub expires_in_days: Option<i64>,
    /// The programme the phone is for; needed only when the user works in
    /// more than one.
    #[serde(default)]
    pub programme: Option<String>,
}

/// A new device token with ODK Collect's settings QR code for it.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct IssuedForCollect {
    #[serde(flatten)]
    pub issued: tokens::Issued,
    pub collect_settings: CollectSettings,
}

/// `POST /api/v1/tokens/collect-settings`: a new device token for a field
/// worker's phone, with the QR code that sets up ODK Collect with it. A
/// POST, and a new token each time: a token's secret is kept only as its
/// hash, so its QR code exists only in the answer that made it.
#[utoipa::path(
    post,
    path = "/tokens/collect-settings",
    tag = "tokens",
    request_body = NewCollectToken,
    responses(
        (status = 201, description = "The device token and Collect's settings QR code (text and PNG); both hold the secret and are in this answer only", body = IssuedForCollect),
        (status = 404, description = "No such user, or one the caller may not see", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The server's public_url is not set", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a field worker, the lifetime is over the cap, or the programme is not one the user works in (or must be named)", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn create_for_collect(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    body: ApiJson<NewCollectToken>,
) -> AppResult<HttpResponse> {
    let issued = issued_for_collect(&state, origin, me, body.0).await?;
    Ok(HttpResponse::Created().json(issued))
}

/// A device token with Collect's settings for it (`POST
/// /tokens/collect-settings`, and the console), audited as
/// `device_token_created`: the same rules as `POST /tokens` (a coordinator
/// only for users all of whose sites are theirs, the lifetime cap).
pub async fn issued_for_collect(
    state: &AppState,
    origin: Origin,
    me: Principal,
    request: NewCollectToken,
) -> AppResult<IssuedForCollect> {
    policy::visible_user_sites(&me)?;
    let public_url =
        collect_settings::require_public_url(state.settings.public_url.as_deref())?.to_string();
    let max_days = state.settings.device_token_ttl_days;
    let ttl_days = request.expires_in_days.unwrap_or(max_days);
    let actor = me.clone();
    let issued = state
        .audited(origin, actor, "device_token_created", move |conn| {
            let user = users::get(conn, &request.user_id).ok();
            let programme = match &user {
                Some(user) => {
                    policy::issue_device_token_for(&me, &user.site_ids)?;
                    Some(collect_settings::programme_for(
                        conn,
                        user,
                        request.programme.as_deref(),
                    )?)
                }
                None => None,
            };
            let issued = tokens::issue_device(
                conn,
                &request.user_id,
                &request.label,
                Some(&me.user_id),
                ttl_days,
                max_days,
            )?;
            let (Some(user), Some(programme)) = (user, programme) else {
                unreachable!("issue_device refuses a user that does not exist");
            };
            let what = Audited::object("token", &issued.info.id)
                .detail(format!("{} (ODK Collect, {programme})", request.user_id));
            Ok(((issued, programme, user.username), what))
        })
        .await?;
    // Drawn after the commit: the transaction stays short.
    let (issued, programme, username) = issued;
    let collect_settings =
        collect_settings::for_token(&public_url, &programme, &username, &issued.token);
    Ok(IssuedForCollect {
        issued,
        collect_settings,
    })
}

/// `DELETE /api/v1/tokens/{id}`: admins revoke any token, coordinators those
/// of their sites' staff, anyone their own.
#[utoipa::path(
    delete,
    path = "/tokens/{id}",
    tag = "tokens",
    params(("id" = TokenId, Path)),
    responses((status = 200, description = "The token, revoked", body = tokens::TokenInfo), (status = 404, description = "No such token, or one the caller may not see", body = Problem, content_type = "application/problem+json")),
)]
pub async fn revoke(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    id: web::Path<TokenId>,
) -> AppResult<HttpResponse> {
    let revoked = revoked(&state, origin, me, id.to_string()).await?;
    Ok(HttpResponse::Ok().json(revoked))
}

/// Revokes a token (`DELETE /tokens/{id}`, and the console), audited as
/// `token_revoked`: admins any, coordinators those of their sites' staff,
/// anyone their own.
pub async fn revoked(
    state: &AppState,
    origin: Origin,
    me: Principal,
    id: String,
) -> AppResult<tokens::TokenInfo> {
    let actor = me.clone();
    state
        .audited(origin, actor, "token_revoked", move |conn| {
            let token = tokens::get(conn, &id)?;
            if token.user_id != me.user_id {
                let owner = users::get(conn, &token.user_id)?;
                policy::may_manage_user_at(&me, &owner.site_ids)?;
            }
            let revoked = tokens::revoke(conn, &id)?;
            Ok((revoked, Audited::object("token", id.as_str())))
        })
        .await
}
