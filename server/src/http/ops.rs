//! Operations endpoints: liveness, readiness, metrics.

use actix_web::{web, HttpResponse};

use crate::app::AppState;
use crate::db;
use crate::error::{AppError, AppResult};

/// `GET /healthz`: the process is up and answering.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// `GET /readyz`: the database answers and has every migration of this build.
pub async fn readyz(state: web::Data<AppState>) -> AppResult<HttpResponse> {
    let current = state
        .db(|conn| {
            if !db::ping(conn) {
                return Err(AppError::Unavailable("database does not answer".into()));
            }
            db::migrations_current(conn).map_err(|e| AppError::Unavailable(e.to_string()))
        })
        .await?;
    if current {
        Ok(HttpResponse::Ok().json(serde_json::json!({ "status": "ready" })))
    } else {
        Err(AppError::Unavailable(
            "database migrations are pending".into(),
        ))
    }
}

/// `GET /metrics`: Prometheus text format. Route patterns only; no ids.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}
