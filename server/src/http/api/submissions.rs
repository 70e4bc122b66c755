use actix_web::{web, HttpResponse};

use crate::app::AppState;
use crate::audit::Origin;
use actix_web::ResponseError;
use serde_json::json;

use crate::error::{AppError, AppResult};
use crate::http::extract::{AuthUser, Batch, JoseBody};
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

/// Most submissions one batch may carry.
pub const MAX_BATCH: usize = 100;

/// `POST /api/v1/submissions/batch`: a phone back in signal uploads its
/// queue in one round trip. Each item is stored (or refused) on its own, in
/// its own transaction; the answer says per item what `POST /submissions`
/// would have said.
pub async fn batch(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    body: Batch,
) -> AppResult<HttpResponse> {
    let items = body.submissions;
    if items.is_empty() || items.len() > MAX_BATCH {
        return Err(AppError::invalid_field(
            "/submissions",
            format!("must hold 1 to {MAX_BATCH} submissions"),
        ));
    }
    let mut results = Vec::with_capacity(items.len());
    for (index, raw) in items.into_iter().enumerate() {
        let (forms, keys, who, origin) = (
            state.forms.clone(),
            state.keys.clone(),
            me.clone(),
            origin.clone(),
        );
        let outcome = state
            .db(move |conn| submissions::ingest(conn, &forms, &keys, &who, &origin, &raw))
            .await;
        results.push(match outcome {
            Ok(Stored::Created(receipt)) => {
                json!({ "index": index, "status": 201, "receipt": receipt })
            }
            Ok(Stored::Repeated(receipt)) => {
                json!({ "index": index, "status": 200, "receipt": receipt })
            }
            Err(err) => {
                if let AppError::Internal(cause) = &err {
                    tracing::error!(%cause, index, "internal error in a batch item");
                }
                json!({
                "index": index,
                "status": err.status_code().as_u16(),
                "problem": err.problem(),
                })
            }
        });
    }
    Ok(HttpResponse::Ok().json(json!({ "results": results })))
}
