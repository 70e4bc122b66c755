//! Indicator reports: checked and audited in one transaction, then counted
//! on a pooled connection.

use actix_web::http::header::CONTENT_DISPOSITION;
use actix_web::{web, HttpResponse};

use crate::app::AppState;
use crate::audit::{self, Event, Origin};
use crate::auth::sites::ProgrammeCode;
use crate::auth::Principal;
use crate::db::write_tx;
use crate::error::{AppError, AppResult, Problem};
use crate::http::extract::AuthUser;
use crate::indicators::{self, Audience, ReportQuery, Request, Row};
use crate::programmes::ProgrammeId;

/// A report for `me`: planned for their audience, audited as
/// `indicators_reported` in one transaction, then counted on a pooled
/// connection. The API's route and the console's CSV both read a report
/// here, and the console's page plans it here ([`planned`]), so all have
/// one access rule and one audit row.
pub async fn reported(
    state: &AppState,
    origin: Origin,
    me: Principal,
    programme: String,
    query: ReportQuery,
) -> AppResult<(Request, Vec<Row>)> {
    let request = planned(state, origin, me, programme, query).await?;
    state
        .db(move |conn| {
            let rows = indicators::report(conn, &request)?;
            Ok((request, rows))
        })
        .await
}

/// A report for `me`, planned for their audience and audited as
/// `indicators_reported`, not yet counted.
pub async fn planned(
    state: &AppState,
    origin: Origin,
    me: Principal,
    programme: String,
    query: ReportQuery,
) -> AppResult<Request> {
    let threshold = state.settings.indicator_suppression_threshold;
    state
        .db(move |conn| {
            write_tx(conn, |conn| {
                let request =
                    indicators::plan(conn, &Audience::of(&me)?, &programme, &query, threshold)?;
                audit::record(
                    conn,
                    &origin,
                    Event::new(Some(&me), "indicators_reported")
                        .object("programme", &request.programme.id)
                        .detail(&indicators::describe(&request)),
                )?;
                Ok::<_, AppError>(request)
            })
        })
        .await
}

/// `GET /api/v1/indicators/{programme}?from=&to=&period=&by=&indicator=&site=&suppress=&format=`
#[utoipa::path(
    get,
    path = "/indicators/{programme}",
    tag = "indicators",
    params(("programme" = ProgrammeCode, Path), ReportQuery),
    responses(
        (status = 200, description = "One row per indicator, period and breakdown (docs/indicators.md)", content(
            (Object = "application/json"),
            (String = "text/csv"),
        )),
        (status = 404, description = "No such programme", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A parameter is not valid (named)", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn report(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    programme: web::Path<ProgrammeId>,
    query: web::Query<ReportQuery>,
) -> AppResult<HttpResponse> {
    let query = query.into_inner();
    let csv = match query.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => return Err(AppError::invalid_field("/format", "csv or json")),
    };
    let (request, rows) = reported(&state, origin, me, programme.to_string(), query).await?;
    if !csv {
        return Ok(HttpResponse::Ok()
            .insert_header(("Cache-Control", "no-store"))
            .json(indicators::json(&request, &rows)));
    }
    csv_answer(&request, &rows)
}

/// A report as its CSV download (the API's `format=csv` and the console's
/// *Download as CSV*).
pub fn csv_answer(request: &Request, rows: &[Row]) -> AppResult<HttpResponse> {
    let filename = format!(
        "{}-indicators-{}-{}.csv",
        request.programme.id, request.from, request.to
    );
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            CONTENT_DISPOSITION,
            format!("attachment; filename=\"{filename}\""),
        ))
        .insert_header(("Cache-Control", "no-store"))
        .body(indicators::csv(request, rows)?))
}
