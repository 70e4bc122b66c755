//! A programme's calendar: read by staff, changed by admins (a holiday
//! added or moved by decree); every open case's deadlines are counted again
//! in the same transaction.

use actix_web::{web, HttpResponse};
use chrono::NaiveDate;
use serde::Deserialize;

use crate::app::{AppState, Audited};
use crate::audit::Origin;
use crate::auth::policy;
use crate::auth::sites::ProgrammeCode;
use crate::cases::reconcile::programme_of;
use crate::cases::timeline;
use crate::error::{AppError, AppResult, Problem};
use crate::http::extract::{ApiJson, AuthUser};
use crate::programmes::holidays::{self, DayKind};
use crate::programmes::ProgrammeId;

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
#[utoipa::path(
    get,
    path = "/programmes/{programme}/calendar",
    tag = "programmes",
    params(("programme" = ProgrammeCode, Path)),
    responses((status = 200, description = "The calendar deadlines count working days with", body = holidays::CalendarView), (status = 404, description = "No such programme", body = Problem, content_type = "application/problem+json")),
)]
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

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = CalendarDayChange)]
#[serde(deny_unknown_fields)]
pub struct DayChange {
    /// `holiday`, or `working` to cancel a shipped holiday.
    #[schema(value_type = DayKind)]
    kind: String,
    #[schema(min_length = 1, max_length = 200)]
    name: String,
}

/// `PUT /api/v1/programmes/{p}/calendar/days/{date}` (admin)
#[utoipa::path(
    put,
    path = "/programmes/{programme}/calendar/days/{date}",
    tag = "programmes",
    params(("programme" = ProgrammeCode, Path), ("date" = String, Path, format = Date, description = "YYYY-MM-DD")),
    request_body = DayChange,
    responses((status = 200, description = "Adds a holiday, or cancels a shipped one; the calendar as it now stands", body = holidays::CalendarView), (status = 404, description = "No such programme", body = Problem, content_type = "application/problem+json"), (status = 422, description = "A field is not valid", body = Problem, content_type = "application/problem+json")),
)]
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
#[utoipa::path(
    delete,
    path = "/programmes/{programme}/calendar/days/{date}",
    tag = "programmes",
    params(("programme" = ProgrammeCode, Path), ("date" = String, Path, format = Date, description = "YYYY-MM-DD")),
    responses((status = 200, description = "Back to the shipped calendar for that day; the calendar as it now stands", body = holidays::CalendarView), (status = 404, description = "No such programme, or the day was not changed", body = Problem, content_type = "application/problem+json"), (status = 422, description = "A field is not valid", body = Problem, content_type = "application/problem+json")),
)]
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
