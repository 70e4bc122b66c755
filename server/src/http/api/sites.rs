use actix_web::{web, HttpResponse};

use super::Items;
use crate::app::{AppState, Audited};
use crate::audit::Origin;
use crate::auth::sites::SiteId;
use crate::auth::{policy, sites};
use crate::error::AppResult;
use crate::error::Problem;
use crate::http::extract::{ApiJson, AuthUser};

/// `GET /api/v1/sites`: every signed-in user may see the organisation units.
#[utoipa::path(
    get,
    path = "/sites",
    tag = "sites",
    responses((status = 200, description = "Every site", body = Items<sites::Site>)),
)]
pub async fn list(state: web::Data<AppState>, AuthUser(_me): AuthUser) -> AppResult<HttpResponse> {
    let list = state.db(|conn| sites::list(conn, None)).await?;
    Ok(HttpResponse::Ok().json(super::Items::new(list)))
}

/// `GET /api/v1/sites/{id}`
#[utoipa::path(
    get,
    path = "/sites/{id}",
    tag = "sites",
    params(("id" = SiteId, Path)),
    responses((status = 200, description = "The site", body = sites::Site), (status = 404, description = "No such site, or one the caller may not see", body = Problem, content_type = "application/problem+json")),
)]
pub async fn show(
    state: web::Data<AppState>,
    AuthUser(_me): AuthUser,
    id: web::Path<SiteId>,
) -> AppResult<HttpResponse> {
    let site = state.db(move |conn| sites::get(conn, &id)).await?;
    Ok(HttpResponse::Ok().json(site))
}

/// `POST /api/v1/sites` (admin)
#[utoipa::path(
    post,
    path = "/sites",
    tag = "sites",
    request_body = sites::NewSite,
    responses((status = 201, description = "Created", body = sites::Site), (status = 409, description = "The code is taken", body = Problem, content_type = "application/problem+json"), (status = 422, description = "The site is not valid", body = Problem, content_type = "application/problem+json")),
)]
pub async fn create(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    body: ApiJson<sites::NewSite>,
) -> AppResult<HttpResponse> {
    policy::administer(&me, "create sites")?;
    let site = state
        .audited(origin, me, "site_created", move |conn| {
            let site = sites::create(conn, body.0)?;
            let what = Audited::object("site", &site.id);
            Ok((site, what))
        })
        .await?;
    Ok(HttpResponse::Created().json(site))
}

/// `PATCH /api/v1/sites/{id}` (admin): name, organisation code, active.
#[utoipa::path(
    patch,
    path = "/sites/{id}",
    tag = "sites",
    params(("id" = SiteId, Path)),
    request_body = sites::SiteChanges,
    responses((status = 200, description = "The site, changed", body = sites::Site), (status = 404, description = "No such site, or one the caller may not see", body = Problem, content_type = "application/problem+json"), (status = 422, description = "A change is not valid", body = Problem, content_type = "application/problem+json")),
)]
pub async fn update(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    id: web::Path<SiteId>,
    body: ApiJson<sites::SiteChanges>,
) -> AppResult<HttpResponse> {
    policy::administer(&me, "change sites")?;
    let site = state
        .audited(origin, me, "site_updated", move |conn| {
            let site = sites::update(conn, &id, body.0)?;
            let what = Audited::object("site", &site.id);
            Ok((site, what))
        })
        .await?;
    Ok(HttpResponse::Ok().json(site))
}
