//! Exports, streamed: `exports::disclose_and_stream` checks and logs first,
//! then rows flow from a job on the CPU pool through a small channel, so
//! memory stays flat however large the export and a client that goes away
//! stops the work. A refusal before the first byte is its own answer.

use actix_web::http::header::CONTENT_DISPOSITION;
use actix_web::web::{self, Bytes};
use actix_web::HttpResponse;

use crate::app::AppState;
use crate::audit::Origin;
use crate::auth::sites::ProgrammeCode;
use crate::cpu::Slot;
use crate::db::DbConnection;
use crate::error::{AppError, AppResult, Problem};
use crate::exports::cases::CaseFilter;
use crate::exports::forms::FormFilter;
use crate::exports::{self, Destination, Planned, Request, Requester};
use crate::http::extract::AuthUser;
use crate::privacy::disclosures::DisclosureTerms;

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
        DisclosureTerms,
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
    let request = Request::Form {
        form_id,
        filter: filter.into_inner(),
        zipped,
    };
    export(&state, origin, me, request).await
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
        DisclosureTerms,
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
    export(&state, origin, me, Request::Cases(filter.into_inner())).await
}

/// Runs `request` for `me` on the CPU pool (a full pool is 503 before
/// anything starts) and answers with its stream once it is checked and
/// logged, or with its refusal. The console's downloads are this too
/// (`console::exports`).
pub(crate) async fn export(
    state: &AppState,
    origin: Origin,
    me: crate::auth::Principal,
    request: Request,
) -> AppResult<HttpResponse> {
    let (head_tx, head_rx) = tokio::sync::oneshot::channel::<AppResult<(String, &str)>>();
    let (body_tx, body_rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    let pool = state.pool.clone();
    state
        .cpu
        .start(move |slot| {
            let mut conn = match pool.get() {
                Ok(conn) => conn,
                Err(e) => {
                    let _ = head_tx.send(Err(e.into()));
                    return;
                }
            };
            // A second connection, when the pool has one to spare, lets a
            // form export read on both cores (`exports::forms::write`).
            let mut second = match request {
                Request::Form { .. } => pool.try_get(),
                Request::Cases(_) => None,
            };
            let mut response = Response {
                head: Some(head_tx),
                body: body_tx,
                slot,
            };
            let requester = Requester::User {
                who: &me,
                origin: &origin,
            };
            let outcome = exports::disclose_and_stream(
                &mut conn,
                second.as_deref_mut(),
                requester,
                &request,
                &mut response,
            );
            if let Err(e) = outcome {
                match response.head.take() {
                    Some(head) => {
                        let _ = head.send(Err(e));
                    }
                    None => {
                        tracing::error!(error = %e, "export failed part-way");
                        let _ = response
                            .body
                            .blocking_send(Err(std::io::Error::other("export failed")));
                    }
                }
            }
        })
        .await?;
    let (filename, content_type) = head_rx
        .await
        .map_err(|_| AppError::internal("export: the job ended before it began"))??;
    Ok(streaming(body_rx, &filename, content_type))
}

/// An export's way to the client: its head once it may start, then its
/// chunks, sent without holding the CPU slot (a slow reader must not hold
/// the pool).
struct Response<'a> {
    head: Option<tokio::sync::oneshot::Sender<AppResult<(String, &'static str)>>>,
    body: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    slot: &'a mut Slot,
}

impl Destination for Response<'_> {
    fn ready(&mut self, export: &Planned) -> AppResult<()> {
        if let Some(head) = self.head.take() {
            let _ = head.send(Ok((export.file_name(), export.content_type())));
        }
        Ok(())
    }

    fn write(&mut self, chunk: Vec<u8>) -> bool {
        let body = &self.body;
        self.slot
            .idle(|| body.blocking_send(Ok(Bytes::from(chunk))))
            .is_ok()
    }
}

/// A `200` whose body is what arrives on `rx`, as an attachment named
/// `filename`, never cached.
fn streaming(
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
    filename: &str,
    content_type: &str,
) -> HttpResponse {
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    HttpResponse::Ok()
        .content_type(content_type.to_string())
        .insert_header((
            CONTENT_DISPOSITION,
            format!("attachment; filename=\"{filename}\""),
        ))
        .insert_header(("Cache-Control", "no-store"))
        .streaming(body)
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
    Ok(streaming(rx, filename, content_type))
}
