//! One quarantined form, for the coordinators of its sender's sites (the
//! same read as `GET /api/v1/submissions/held/{id}`, audited as
//! `quarantined_form_read`): the answers the phone sent, each with the
//! problems its form version finds in it; a form to answer again the
//! questions with a problem (the API's correction); and the coordinator's
//! dismissal. Reached from the held forms on Today.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;

use crate::app::AppState;
use crate::audit::Origin;
use crate::error::{AppError, FieldError};
use crate::forms::answers::Shown;
use crate::http::api;
use crate::ingest::held::{self, HeldReading, Input};
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
    /// Still waiting for a coordinator: the correction and dismissal
    /// forms are shown.
    open: bool,
    /// What was just done (`?done=`), as a catalogue key.
    done: Option<&'static str>,
    /// A correction just refused: what still does not fit.
    still: Vec<FieldError>,
}

impl HeldPage {
    fn of(req: &HttpRequest, session: &super::session::Session, r: HeldReading) -> HeldPage {
        HeldPage {
            chrome: Chrome::signed_in(req, session),
            received_at: r.received_at.format("%Y-%m-%d %H:%M UTC").to_string(),
            completed_at: r.completed_at.format("%Y-%m-%d %H:%M UTC").to_string(),
            open: r.status == QUARANTINED,
            done: None,
            still: Vec::new(),
            r,
        }
    }
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
    let mut page = HeldPage::of(&req, &session, r);
    page.done = match query.done.as_deref() {
        Some("dismissed") => Some("held.dismissed"),
        Some("corrected") => Some("held.corrected_now"),
        _ => None,
    };
    super::page(StatusCode::OK, &page)
}

/// Back to the form's page (an instance id is a UUID: nothing else is put
/// in the address).
fn back_to(id: &str, done: &str) -> Result<HttpResponse, WebError> {
    let id = uuid::Uuid::parse_str(id)
        .map_err(|_| WebError::App(AppError::NotFound("no such form".into())))?;
    Ok(see_other(&format!("/held/{id}?done={done}")))
}

/// `POST /held/{instance_id}/correction`: the questions with a problem
/// answered again (`answer:<pointer>` fields), the other answers as the
/// phone sent them, sent as the API's correction. Answers that still do
/// not fit: the page again (422) with what still does not fit and what
/// was typed.
pub async fn correct(
    req: HttpRequest,
    state: web::Data<AppState>,
    origin: Origin,
    WebUser(session): WebUser,
    id: web::Path<String>,
    form: web::Form<Vec<(String, String)>>,
) -> Result<HttpResponse, WebError> {
    session.check_csrf_in(&form)?;
    let id = id.into_inner();
    let typed: Vec<(String, String)> = form
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("answer:")?.to_string(), v.clone())))
        .collect();
    // The held answers to put the typed ones in; only the correction's
    // outcome is shown, so this read is not a reader's (the page after it
    // is, and is audited).
    let (forms, who, held_id) = (state.forms.clone(), session.principal.clone(), id.clone());
    let reading = state
        .db(move |conn| held::read(conn, &forms, &who, &held_id))
        .await?;
    let data = held::with_typed(&reading, &typed);
    let body = serde_json::to_vec(&serde_json::json!({ "data": data }))
        .map_err(|e| WebError::App(AppError::internal(e)))?;
    let outcome = api::submissions::corrected(
        &state,
        origin.clone(),
        session.principal.clone(),
        id.clone(),
        body.as_slice().into(),
    )
    .await;
    match outcome {
        Ok(_) => back_to(&id, "corrected"),
        Err(AppError::InvalidData { errors, .. } | AppError::Validation { errors, .. }) => {
            let r =
                api::submissions::held_form(&state, origin, session.principal.clone(), id).await?;
            let mut page = HeldPage::of(&req, &session, r);
            for question in &mut page.r.editable {
                if let Some((_, text)) = typed.iter().find(|(p, _)| *p == question.pointer) {
                    question.current = text.clone();
                }
            }
            page.still = errors;
            super::page(StatusCode::UNPROCESSABLE_ENTITY, &page)
        }
        Err(other) => Err(other.into()),
    }
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
