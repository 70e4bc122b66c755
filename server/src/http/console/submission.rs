//! One submission's answers, in labelled sections (`forms::answers`), for
//! those who may read its case: the access rule of `GET /cases/{id}`, and
//! a `submission_read` audit row naming it.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use chrono::Utc;

use crate::app::{AppState, Audited};
use crate::audit::Origin;
use crate::auth::users;
use crate::cases::views;
use crate::error::AppError;
use crate::forms::answers::{self, Line, Shown};
use crate::submissions;

use super::session::WebUser;
use super::{Chrome, WebError};

#[derive(Template)]
#[template(path = "submission.html")]
struct SubmissionPage {
    chrome: Chrome,
    form_title: String,
    form_id: String,
    form_version: String,
    case_id: String,
    case_number: String,
    sent_by: String,
    completed_at: String,
    received_at: String,
    superseded_by: Option<String>,
    lines: Vec<Line>,
}

/// `GET /submissions/{instance_id}`.
pub async fn page(
    req: HttpRequest,
    state: web::Data<AppState>,
    origin: Origin,
    WebUser(session): WebUser,
    id: web::Path<String>,
) -> Result<HttpResponse, WebError> {
    let forms = state.forms.clone();
    let body = state
        .read_audited(
            origin,
            session.principal.clone(),
            "submission_read",
            move |conn, me| {
                // A form the reader may not see reads as one that is not there.
                let missing = || AppError::NotFound("no such form".into());
                let stored = submissions::stored(conn, &id)?.ok_or_else(missing)?;
                let case_id = stored.case_id.clone().ok_or_else(missing)?;
                let (case, access) = views::readable(conn, me, &case_id, Utc::now())?;
                let form = forms.get(conn, &stored.form_id, &stored.form_version)?;
                let sent_by = users::get(conn, &stored.submitted_by)
                    .map(|u| u.username)
                    .unwrap_or_else(|_| stored.submitted_by.clone());
                let what =
                    Audited::object("submission", &stored.instance_id).detail(access.as_str());
                let page = (
                    form.meta.title.clone(),
                    answers::labelled(&form.fields, &stored.data),
                    case.number.clone().unwrap_or_else(|| case.id.clone()),
                    sent_by,
                    stored,
                );
                Ok((page, Some(what)))
            },
        )
        .await?;
    let (form_title, lines, case_number, sent_by, stored) = body;
    let page = SubmissionPage {
        chrome: Chrome::signed_in(&req, &session),
        form_title,
        form_id: stored.form_id,
        form_version: stored.form_version,
        case_id: stored.case_id.unwrap_or_default(),
        case_number,
        sent_by,
        completed_at: stored.completed_at.format("%Y-%m-%d %H:%M UTC").to_string(),
        received_at: stored.received_at.format("%Y-%m-%d %H:%M UTC").to_string(),
        superseded_by: stored.superseded_by,
        lines,
    };
    super::page(StatusCode::OK, &page)
}
