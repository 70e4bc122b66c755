//! A programme's calendar: read by staff, changed by admins (a holiday
//! added or moved by decree); every open case's deadlines are counted again
//! in the same transaction.

use actix_web::{web, HttpResponse};
use chrono::NaiveDate;
use serde::Deserialize;

use crate::app::{AppState, Audited};
use crate::audit::Origin;
use crate::auth::policy;
use crate::cases::reconcile::programme_of;
use crate::cases::timeline;
use crate::error::{AppError, AppResult};
use crate::http::extract::{ApiJson, AuthUser};
use crate::programmes::{holidays, ProgrammeId};

fn date(text: &str) -> AppResult<NaiveDate> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| AppError::bad_request("the date must be YYYY-MM-DD"))
}

fn known(programme: &str) -> AppResult<()> {
    programme_of(programme)
        .map(|_| ())
        .map_err(|_| AppError::NotFound(format!("no programme {programme:?}")))
}

/// `GET /api/v1/programmes/{p}/calendar`
pub async fn calendar(
    state: web::Data<AppState>,
    AuthUser(_me): AuthUser,
    programme: web::Path<ProgrammeId>,
) -> AppResult<HttpResponse> {
    known(&programme)?;
    let view = state
        .db(move |conn| holidays::view(conn, &*programme_of(&programme)?))
        .await?;
    Ok(HttpResponse::Ok().json(view))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DayChange {
    /// `holiday`, or `working` to cancel a shipped holiday.
    kind: String,
    name: String,
}

/// `PUT /api/v1/programmes/{p}/calendar/days/{date}` (admin)
pub async fn set_day(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    path: web::Path<(ProgrammeId, String)>,
    body: ApiJson<DayChange>,
) -> AppResult<HttpResponse> {
    policy::administer(&me, "change calendars")?;
    let (programme, day) = path.into_inner();
    known(&programme)?;
    let day = date(&day)?;
    if body.0.name.trim().is_empty() || body.0.name.len() > 200 {
        return Err(AppError::invalid_field("/name", "must be 1–200 characters"));
    }
    let by = me.user_id.clone();
    let view = state
        .audited(origin, me, "calendar_changed", move |conn| {
            let rules = programme_of(&programme)?;
            holidays::set_day(conn, &programme, day, &body.0.kind, &body.0.name, Some(&by))?;
            let refolded = timeline::calendar_changed(conn, &rules)?;
            let what = Audited::object("programme", programme.as_str()).detail(format!(
                "{day} {}; {refolded} open case(s) refolded",
                body.0.kind
            ));
            Ok((holidays::view(conn, &rules)?, what))
        })
        .await?;
    Ok(HttpResponse::Ok().json(view))
}

/// `DELETE /api/v1/programmes/{p}/calendar/days/{date}` (admin): back to
/// the shipped calendar for that day.
pub async fn reset_day(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    path: web::Path<(ProgrammeId, String)>,
) -> AppResult<HttpResponse> {
    policy::administer(&me, "change calendars")?;
    let (programme, day) = path.into_inner();
    known(&programme)?;
    let day = date(&day)?;
    let view = state
        .audited(origin, me, "calendar_changed", move |conn| {
            let rules = programme_of(&programme)?;
            if !holidays::reset_day(conn, &programme, day)? {
                return Err(AppError::NotFound(format!("{day} was not changed")));
            }
            let refolded = timeline::calendar_changed(conn, &rules)?;
            let what = Audited::object("programme", programme.as_str())
                .detail(format!("{day} reset; {refolded} open case(s) refolded"));
            Ok((holidays::view(conn, &rules)?, what))
        })
        .await?;
    Ok(HttpResponse::Ok().json(view))
}
