use actix_web::{web, HttpResponse};

use crate::app::{AppState, Audited};
use crate::audit::Origin;
use crate::auth::sites::SiteId;
use crate::auth::{policy, sites};
use crate::error::AppResult;
use crate::http::extract::{ApiJson, AuthUser};

/// `GET /api/v1/sites`: every signed-in user may see the organisation units.
pub async fn list(state: web::Data<AppState>, AuthUser(_me): AuthUser) -> AppResult<HttpResponse> {
    let list = state.db(|conn| sites::list(conn, None)).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": list })))
}

/// `GET /api/v1/sites/{id}`
pub async fn show(
    state: web::Data<AppState>,
    AuthUser(_me): AuthUser,
    id: web::Path<SiteId>,
) -> AppResult<HttpResponse> {
    let site = state.db(move |conn| sites::get(conn, &id)).await?;
    Ok(HttpResponse::Ok().json(site))
}

/// `POST /api/v1/sites` (admin)
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
