//! Exports, streamed: the checks and the audit row come first, then rows
//! flow from a blocking task through a small channel, so memory stays flat
//! however large the export and a client that goes away stops the work.

use actix_web::http::header::CONTENT_DISPOSITION;
use actix_web::web::{self, Bytes};
use actix_web::HttpResponse;
use chrono::Utc;

use crate::app::AppState;
use crate::audit::{self, Event, Origin};
use crate::auth::sites::ProgrammeCode;
use crate::auth::Principal;
use crate::db::write_tx;
use crate::db::DbConnection;
use crate::error::{AppError, AppResult, Problem};
use crate::exports::cases::{self as case_exports, CaseFilter};
use crate::exports::forms::{self as form_exports, FormFilter};
use crate::exports::{self, archive, Formulas};
use crate::http::extract::AuthUser;
use crate::privacy::disclosures::{self, Checked};

/// `GET /api/v1/exports/forms/{id}.csv|.zip?from=&to=&site=&version=&bom=&identifying=&purpose=&formula_escape=`
#[utoipa::path(
    get,
    path = "/exports/forms/{file}",
    tag = "exports",
    params(
        ("file" = String, Path, description = "`{form_id}.csv`, or `{form_id}.zip` for the archive with one CSV per repeat group", example = "kz.referral.csv"),
        ("from" = Option<chrono::NaiveDate>, Query, description = "Received on or after this day (UTC)"),
        ("to" = Option<chrono::NaiveDate>, Query, description = "Received on or before this day (UTC)"),
        ("site" = Option<String>, Query, description = "A site's code"),
        ("version" = Option<String>, Query, description = "One version of the form"),
        ("identifying" = Option<bool>, Query, description = "Names and other direct identifiers (coordinators only): a disclosure, needing the terms below"),
        ("case" = Option<String>, Query, description = "Only this case (its id)"),
        ("legal_basis" = Option<String>, Query, description = "An identifying export's legal basis"),
        ("provision" = Option<String>, Query, description = "The provision of law, court order or agreement, where the basis needs one"),
        ("consent" = Option<String>, Query, description = "Consent record ids, comma-separated (legal_basis=consent)"),
        ("recipient" = Option<String>, Query),
        ("purpose" = Option<String>, Query),
        ("method" = Option<String>, Query, description = "How it is handed over; `CSV download` by default"),
        ("bom" = Option<bool>, Query, description = "Start with a byte-order mark, for Excel"),
        ("formula_escape" = Option<bool>, Query, description = "`false`: cells a spreadsheet would run as formulas are written as they are"),
    ),
    responses(
        (status = 200, description = "One row per current submission, streamed", content(
            (String = "text/csv"),
            (Vec<u8> = "application/zip"),
        )),
        (status = 404, description = "No such form, or a file name other than {form}.csv or {form}.zip", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A filter is not valid, or a disclosure's terms are missing (each named)", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn form_csv(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    file: web::Path<String>,
    filter: web::Query<FormFilter>,
) -> AppResult<HttpResponse> {
    let (form_id, zipped) = match (file.strip_suffix(".csv"), file.strip_suffix(".zip")) {
        (Some(id), _) => (id.to_string(), false),
        (_, Some(id)) => (id.to_string(), true),
        _ => {
            return Err(AppError::NotFound(
                "exports are {form}.csv or {form}.zip".into(),
            ))
        }
    };
    let filter = filter.into_inner();
    let plan = state
        .db(move |conn| {
            write_tx(conn, |conn| {
                let plan = form_exports::plan(conn, &exports::Scope::of(&me)?, &form_id, &filter)?;
                let what = format!("form {form_id}");
                log_export(
                    conn,
                    &origin,
                    &me,
                    Event::new(Some(&me), "form_exported").object("form", &form_id),
                    (&what, plan.disclosure.as_ref(), plan.formulas),
                    plan.site_ids(),
                    &plan.column_names(),
                )?;
                Ok(plan)
            })
        })
        .await?;
    // A second connection, when the pool has one to spare, lets the
    // export read on both cores (`form_exports::write`).
    let pool = state.pool.clone();
    if zipped {
        let filename = format!("{}.zip", plan.form_id);
        return stream(&state, &filename, "application/zip", move |conn, sink| {
            archive::write(conn, pool.try_get().as_deref_mut(), &plan, sink)
        })
        .await;
    }
    let filename = format!("{}.csv", plan.form_id);
    stream_csv(&state, &filename, move |conn, sink| {
        form_exports::write(conn, pool.try_get().as_deref_mut(), &plan, sink)
    })
    .await
}

/// `GET /api/v1/exports/cases.csv?programme=&from=&to=&site=&bom=&identifying=&purpose=&formula_escape=`
#[utoipa::path(
    get,
    path = "/exports/cases.csv",
    tag = "exports",
    params(
        ("programme" = ProgrammeCode, Query),
        ("from" = Option<chrono::NaiveDate>, Query, description = "Opened on or after this day (UTC)"),
        ("to" = Option<chrono::NaiveDate>, Query, description = "Opened on or before this day (UTC)"),
        ("site" = Option<String>, Query, description = "A site's code"),
        ("identifying" = Option<bool>, Query, description = "Names and other direct identifiers (coordinators only): a disclosure, needing the terms below"),
        ("case" = Option<String>, Query, description = "Only this case (its id)"),
        ("legal_basis" = Option<String>, Query, description = "An identifying export's legal basis"),
        ("provision" = Option<String>, Query, description = "The provision of law, court order or agreement, where the basis needs one"),
        ("consent" = Option<String>, Query, description = "Consent record ids, comma-separated (legal_basis=consent)"),
        ("recipient" = Option<String>, Query),
        ("purpose" = Option<String>, Query),
        ("method" = Option<String>, Query, description = "How it is handed over; `CSV download` by default"),
        ("bom" = Option<bool>, Query, description = "Start with a byte-order mark, for Excel"),
        ("formula_escape" = Option<bool>, Query, description = "`false`: cells a spreadsheet would run as formulas are written as they are"),
    ),
    responses(
        (status = 200, description = "One row per case, streamed", content_type = "text/csv", body = String),
        (status = 404, description = "No such case", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A filter is not valid, or a disclosure's terms are missing (each named)", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn cases_csv(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    filter: web::Query<CaseFilter>,
) -> AppResult<HttpResponse> {
    let filter = filter.into_inner();
    let plan = state
        .db(move |conn| {
            write_tx(conn, |conn| {
                let plan = case_exports::plan(conn, &exports::Scope::of(&me)?, &filter)?;
                let what = format!("cases of {}", plan.programme);
                log_export(
                    conn,
                    &origin,
                    &me,
                    Event::new(Some(&me), "cases_exported").object("programme", &plan.programme),
                    (&what, plan.disclosure.as_ref(), plan.formulas),
                    plan.site_ids(),
                    &plan.column_names(),
                )?;
                Ok(plan)
            })
        })
        .await?;
    let filename = format!("{}-cases.csv", plan.programme);
    stream_csv(&state, &filename, move |conn, sink| {
        case_exports::write(conn, &plan, sink)
    })
    .await
}

/// An export's audit row and, for an identifying one, its entry in the
/// disclosure log (what went: the export and its columns), in the
/// transaction that plans it, before the first byte leaves. Both say when
/// formulas were left as they are (`formula_escape=false`).
fn log_export(
    conn: &mut DbConnection,
    origin: &Origin,
    me: &Principal,
    event: Event<'_>,
    (what, disclosure, formulas): (&str, Option<&Checked>, Formulas),
    site_ids: &[String],
    columns: &[String],
) -> AppResult<()> {
    let note = formulas
        .note()
        .map(|n| format!("; {n}"))
        .unwrap_or_default();
    let Some(checked) = disclosure else {
        return audit::record(conn, origin, event.detail(&format!("de-identified{note}")));
    };
    let sent = format!("{what}, columns: {}{note}", columns.join(" "));
    let id = disclosures::record(conn, Some(me), checked, site_ids, &sent, Utc::now())?;
    let detail = format!("identifying; disclosure {id} ({}){note}", checked.basis);
    audit::record(
        conn,
        origin,
        event.detail(&detail).purpose(&checked.purpose),
    )
}

pub(super) async fn stream_csv<F>(
    state: &AppState,
    filename: &str,
    write: F,
) -> AppResult<HttpResponse>
where
    F: FnOnce(&mut DbConnection, &mut (dyn FnMut(Vec<u8>) -> bool + Send)) -> AppResult<u64>
        + Send
        + 'static,
{
    stream(state, filename, "text/csv; charset=utf-8", write).await
}

/// Streams what `write` produces, from a job on the CPU pool with its own
/// connection, through a small channel. The job holds its CPU slot while it
/// renders and lets it go while it waits for the client to read (a slow
/// reader must not hold the pool); a full pool is 503 before anything starts.
async fn stream<F>(
    state: &AppState,
    filename: &str,
    content_type: &str,
    write: F,
) -> AppResult<HttpResponse>
where
    F: FnOnce(&mut DbConnection, &mut (dyn FnMut(Vec<u8>) -> bool + Send)) -> AppResult<u64>
        + Send
        + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    let pool = state.pool.clone();
    state
        .cpu
        .start(move |slot| {
            let mut conn = match pool.get() {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::error!(error = %e, "export: no database connection");
                    let _ = tx.blocking_send(Err(std::io::Error::other("export failed")));
                    return;
                }
            };
            let mut sink = |chunk: Vec<u8>| {
                slot.idle(|| tx.blocking_send(Ok(Bytes::from(chunk))))
                    .is_ok()
            };
            if let Err(e) = write(&mut conn, &mut sink) {
                tracing::error!(error = %e, "export failed part-way");
                let _ = tx.blocking_send(Err(std::io::Error::other("export failed")));
            }
        })
        .await?;
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok(HttpResponse::Ok()
        .content_type(content_type.to_string())
        .insert_header((
            CONTENT_DISPOSITION,
            format!("attachment; filename=\"{filename}\""),
        ))
        .insert_header(("Cache-Control", "no-store"))
        .streaming(body))
}
