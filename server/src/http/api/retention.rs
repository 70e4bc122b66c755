//! The retention report of closed case files: checked and audited first,
//! then streamed a page at a time.

use actix_web::http::header::{HeaderValue, CONTENT_DISPOSITION, CONTENT_TYPE};
use actix_web::{web, HttpResponse};
use chrono::{NaiveDate, Utc};
use serde::Deserialize;

use crate::app::AppState;
use crate::audit::{self, Event, Origin};
use crate::auth::policy;
use crate::auth::sites::ProgrammeCode;
use crate::error::{AppError, AppResult, Problem};
use crate::http::extract::AuthUser;
use crate::indicators::ReportFormat;
use crate::privacy::retention::{self, ReportQuery};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// One programme; all when absent.
    #[param(value_type = Option<ProgrammeCode>)]
    pub programme: Option<String>,
    /// json (default) or csv.
    #[param(value_type = Option<ReportFormat>)]
    pub format: Option<String>,
    /// The day to judge on; today in each programme's time zone by default.
    pub as_of: Option<NaiveDate>,
}

/// `GET /api/v1/retention?programme=&as_of=&format=csv|json`
/// (coordinators, their sites).
#[utoipa::path(
    get,
    path = "/retention",
    tag = "retention",
    params(Params),
    responses(
        (status = 200, description = "Closed case files and until when each must be kept", content(
            (retention::Report = "application/json"),
            (String = "text/csv"),
        )),
        (status = 422, description = "Not a programme or format", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn report(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    params: web::Query<Params>,
) -> AppResult<HttpResponse> {
    let params = params.into_inner();
    let csv = match params.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => return Err(AppError::invalid_field("/format", "csv or json")),
    };
    let query = ReportQuery {
        site_ids: policy::retention_report(&me)?,
        programme: params.programme,
        as_of: params.as_of,
    };
    retention::check(&query)?;
    let query = state
        .db(move |conn| {
            audit::record(
                conn,
                &origin,
                Event::new(Some(&me), "retention_reported")
                    .object("programme", query.programme.as_deref().unwrap_or("all"))
                    .detail(&retention::describe(&query)),
            )?;
            Ok(query)
        })
        .await?;
    let now = Utc::now();
    let count = |s: retention::Summary| s.kept + s.due + s.unknown;
    if csv {
        return super::exports::stream_csv(&state, "retention.csv", move |conn, sink| {
            retention::write_csv(conn, &query, now, sink).map(count)
        })
        .await;
    }
    // The same streaming, as a JSON body rather than a CSV attachment.
    let mut res = super::exports::stream_csv(&state, "retention.json", move |conn, sink| {
        retention::write_json(conn, &query, now, sink).map(count)
    })
    .await?;
    res.headers_mut().remove(CONTENT_DISPOSITION);
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(res)
}
