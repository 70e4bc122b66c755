//! One quarantined form, for the coordinators of its sender's sites (the
//! same read as `GET /api/v1/submissions/held/{id}`, audited as
//! `quarantined_form_read`): the answers the phone sent, each with the
//! problems its form version finds in it, and the coordinator's dismissal.
//! Reached from the held forms on Today.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;

use crate::app::AppState;
use crate::audit::Origin;
use crate::forms::answers::Shown;
use crate::http::api;
use crate::ingest::held::HeldReading;
use crate::ingest::QUARANTINED;

use super::session::WebUser;
use super::{see_other, Chrome, WebError};

#[derive(Template)]
#[template(path = "held.html")]
struct HeldPage {
    chrome: Chrome,
    r: HeldReading,
    received_at: String,
    completed_at: String,
    /// Still waiting for a coordinator: the dismissal form is shown.
    open: bool,
    dismissed_now: bool,
}

#[derive(Deserialize)]
pub struct Done {
    done: Option<String>,
}

/// `GET /held/{instance_id}`.
pub async fn page(
    req: HttpRequest,
    state: web::Data<AppState>,
    origin: Origin,
    WebUser(session): WebUser,
    id: web::Path<String>,
    query: web::Query<Done>,
) -> Result<HttpResponse, WebError> {
    let r = api::submissions::held_form(&state, origin, session.principal.clone(), id.into_inner())
        .await?;
    let page = HeldPage {
        chrome: Chrome::signed_in(&req, &session),
        received_at: r.received_at.format("%Y-%m-%d %H:%M UTC").to_string(),
        completed_at: r.completed_at.format("%Y-%m-%d %H:%M UTC").to_string(),
        open: r.status == QUARANTINED,
        dismissed_now: query.done.as_deref() == Some("dismissed"),
        r,
    };
    super::page(StatusCode::OK, &page)
}

#[derive(Deserialize)]
pub struct DismissalForm {
    csrf: String,
    reason: String,
}

/// `POST /held/{instance_id}/dismissal`: the API's dismissal.
pub async fn dismiss(
    state: web::Data<AppState>,
    origin: Origin,
    WebUser(session): WebUser,
    id: web::Path<String>,
    form: web::Form<DismissalForm>,
) -> Result<HttpResponse, WebError> {
    session.check_csrf(&form.csrf)?;
    let id = id.into_inner();
    api::submissions::dismissed(
        &state,
        origin,
        session.principal,
        id.clone(),
        form.into_inner().reason,
    )
    .await?;
    // An instance id is a UUID: nothing else is put in the address.
    let id = uuid::Uuid::parse_str(&id)
        .map_err(|_| WebError::App(crate::error::AppError::NotFound("no such form".into())))?;
    Ok(see_other(&format!("/held/{id}?done=dismissed")))
}
