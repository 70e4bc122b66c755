use actix_web::{web, HttpResponse};

use crate::app::AppState;
use crate::audit::Origin;
use crate::error::AppResult;
use crate::http::extract::{AuthUser, JoseBody};
use crate::submissions::{self, Stored};

/// `POST /api/v1/submissions`: one JWE. 201 stored; 200 the same instance
/// was already stored with the same content (a retry); 409 same instance,
/// other content; 400 unreadable; 403 not for this case; 422 invalid.
pub async fn create(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    body: JoseBody,
) -> AppResult<HttpResponse> {
    let (forms, keys) = (state.forms.clone(), state.keys.clone());
    let stored = state
        .db(move |conn| submissions::ingest(conn, &forms, &keys, &me, &origin, &body.0))
        .await?;
    Ok(match stored {
        Stored::Created(receipt) => HttpResponse::Created().json(receipt),
        Stored::Repeated(receipt) => HttpResponse::Ok().json(receipt),
    })
}
