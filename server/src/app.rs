//! Builds the actix application: shared state, middleware and every route,
//! in one place.

use std::sync::Arc;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::{from_fn, DefaultHeaders, ErrorHandlerResponse, ErrorHandlers, Next};
use actix_web::{web, App, Error, HttpMessage, HttpResponse, ResponseError};
use futures_util::FutureExt;
use tracing_actix_web::{RootSpanBuilder, TracingLogger};

use crate::audit::{self, Event, Origin};
use crate::auth::Principal;
use crate::config::Settings;
use crate::cpu::{CpuPool, Weight};
use crate::crypto::keys::KeyRing;
use crate::db::{write_tx, DbConnection, Pool};
use crate::error::{AppError, AppResult};
use crate::forms::FormCache;
use crate::http;
use crate::metrics::Metrics;
use crate::submissions::committer::Committer;
use crate::submissions::Limits;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub pool: Pool,
    pub settings: Arc<Settings>,
    pub metrics: Metrics,
    pub forms: Arc<FormCache>,
    /// Programme private keys, unsealed on first use.
    pub keys: Arc<KeyRing>,
    /// The one writer that stores submissions in group commits.
    pub committer: Arc<Committer>,
    /// Where CPU-heavy work runs, bounded (`cpu`).
    pub cpu: Arc<CpuPool>,
}

impl AppState {
    /// Runs database work on the blocking pool, off the async workers.
    pub async fn db<T, F>(&self, work: F) -> AppResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConnection) -> AppResult<T> + Send + 'static,
    {
        let pool = self.pool.clone();
        web::block(move || {
            let mut conn = pool.get()?;
            work(&mut conn)
        })
        .await?
    }

    /// Runs CPU-heavy work that also reads the database (decryption,
    /// validation) on the bounded CPU pool, never on an HTTP worker: 503
    /// `server_busy` when it is full. `body_bytes` is the size of the input
    /// it works on (large inputs share half the pool).
    pub async fn cpu_db<T, F>(&self, body_bytes: usize, work: F) -> AppResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConnection) -> AppResult<T> + Send + 'static,
    {
        let pool = self.pool.clone();
        self.cpu
            .run(Weight::of_bytes(body_bytes), move || {
                let mut conn = pool.get()?;
                work(&mut conn)
            })
            .await
    }

    pub fn submission_limits(&self) -> Limits {
        Limits {
            max_attachment_bytes: self.settings.max_attachment_bytes,
            max_submission_bytes: self.settings.max_submission_bytes,
        }
    }
}

/// What a change did, for its audit row.
pub struct Audited {
    pub object_type: &'static str,
    pub object_id: String,
    pub detail: Option<String>,
    /// Why the actor did it, in their words (break-glass, identifying
    /// exports).
    pub purpose: Option<String>,
}

impl Audited {
    pub fn object(object_type: &'static str, object_id: impl Into<String>) -> Self {
        Audited {
            object_type,
            object_id: object_id.into(),
            detail: None,
            purpose: None,
        }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn purpose(mut self, purpose: impl Into<String>) -> Self {
        self.purpose = Some(purpose.into());
        self
    }
}

impl AppState {
    /// Runs a change and the audit row of what it did in one write
    /// transaction, off the async workers: a change without its audit row
    /// cannot exist.
    pub async fn audited<T, F>(
        &self,
        origin: Origin,
        actor: Principal,
        action: &'static str,
        work: F,
    ) -> AppResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConnection) -> AppResult<(T, Audited)> + Send + 'static,
    {
        self.read_audited(origin, actor, action, move |conn, _| {
            work(conn).map(|(value, what)| (value, Some(what)))
        })
        .await
    }

    /// Runs a read of case content (or a change) and its audit row together:
    /// what was read is on record, or nothing was read.
    pub async fn read_audited<T, F>(
        &self,
        origin: Origin,
        actor: Principal,
        action: &'static str,
        work: F,
    ) -> AppResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConnection, &Principal) -> AppResult<(T, Option<Audited>)>
            + Send
            + 'static,
    {
        self.db(move |conn| {
            write_tx(conn, |conn| {
                let (value, what) = work(conn, &actor)?;
                let mut event = Event::new(Some(&actor), action);
                if let Some(what) = &what {
                    event = event.object(what.object_type, &what.object_id);
                    if let Some(detail) = &what.detail {
                        event = event.detail(detail);
                    }
                    if let Some(purpose) = &what.purpose {
                        event = event.purpose(purpose);
                    }
                }
                audit::record(conn, &origin, event)?;
                Ok(value)
            })
        })
        .await
    }
}

/// Request spans carry the method, the path, the matched route, the status,
/// the request id and, once known, the caller's user id: never the query
/// string (an export's recipient and purpose, in someone's words), never a
/// header (a token), never an error's text (it may quote what was sent).
/// Built here rather than with tracing-actix-web's `root_span!`, which
/// records the full URI, the user agent and the client's address.
pub struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &ServiceRequest) -> tracing::Span {
        let request_id = request
            .extensions()
            .get::<tracing_actix_web::RequestId>()
            .map(|id| id.to_string())
            .unwrap_or_default();
        tracing::info_span!(
            "HTTP request",
            http.method = %request.method(),
            http.target = %request.path(),
            http.route = tracing::field::Empty,
            http.status_code = tracing::field::Empty,
            request_id = %request_id,
            user_id = tracing::field::Empty,
        )
    }

    fn on_request_end<B: MessageBody>(
        span: tracing::Span,
        outcome: &Result<ServiceResponse<B>, Error>,
    ) {
        let status = match outcome {
            Ok(res) => {
                if let Some(route) = res.request().match_pattern() {
                    span.record("http.route", route.as_str());
                }
                res.status()
            }
            Err(err) => err.as_response_error().status_code(),
        };
        span.record("http.status_code", status.as_u16());
    }
}

/// A credential in the query string is refused (400) before routing,
/// authentication or any handler sees the request; see
/// [`http::extract::carries_credential`].
async fn refuse_credentials_in_query(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    if http::extract::carries_credential(req.query_string()) {
        let response = http::extract::credential_in_query().error_response();
        return Ok(req.into_response(response).map_into_right_body());
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_left_body)
}

pub fn build(
    state: AppState,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = Error,
        InitError = (),
    >,
> {
    let metrics = state.metrics.clone();
    let limit = state.settings.max_body_bytes;
    let hsts = state.settings.tls.is_some();
    let mut security_headers = DefaultHeaders::new()
        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .add((header::X_FRAME_OPTIONS, "DENY"))
        .add((header::REFERRER_POLICY, "no-referrer"))
        .add((header::CACHE_CONTROL, "no-store"))
        .add((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; frame-ancestors 'none'",
        ));
    if hsts {
        security_headers =
            security_headers.add((header::STRICT_TRANSPORT_SECURITY, "max-age=31536000"));
    }
    App::new()
        .app_data(web::Data::new(state))
        .app_data(web::PayloadConfig::new(limit))
        // What could not be read is named, never the value sent (which a
        // client's or proxy's log of the answer would then keep).
        .app_data(web::PathConfig::default().error_handler(|err, _| {
            let why = http::extract::without_values(&err.to_string());
            AppError::bad_request(format!("path: {why}")).into()
        }))
        .app_data(web::QueryConfig::default().error_handler(|err, _| {
            let why = http::extract::without_values(&err.to_string());
            AppError::bad_request(format!("query string: {why}")).into()
        }))
        .route("/healthz", web::get().to(http::ops::healthz))
        .route("/readyz", web::get().to(http::ops::readyz))
        .route("/metrics", web::get().to(http::ops::metrics))
        .configure(http::api::routes)
        .default_service(web::to(not_found))
        .wrap(from_fn(refuse_credentials_in_query))
        .wrap(from_fn(audit_refusals))
        .wrap(ErrorHandlers::new().handler(StatusCode::METHOD_NOT_ALLOWED, method_not_allowed))
        .wrap(security_headers)
        .wrap_fn(move |req, srv| {
            let started = Instant::now();
            let method = req.method().to_string();
            let metrics = metrics.clone();
            actix_web::dev::Service::call(srv, req).map(move |mut result| {
                if let Ok(res) = &mut result {
                    // Lets a user quote the id of a failed request to support.
                    let id = res
                        .request()
                        .extensions()
                        .get::<tracing_actix_web::RequestId>()
                        .map(|id| id.to_string());
                    if let Some(value) = id.and_then(|id| header::HeaderValue::from_str(&id).ok()) {
                        res.headers_mut()
                            .insert(header::HeaderName::from_static("x-request-id"), value);
                    }
                    let route = res
                        .request()
                        .match_pattern()
                        .unwrap_or_else(|| "unmatched".to_string());
                    metrics.observe(
                        &method,
                        &route,
                        res.status().as_u16(),
                        started.elapsed().as_secs_f64(),
                    );
                }
                result
            })
        })
        .wrap(TracingLogger::<RequestSpan>::new())
}

/// Every refusal of a signed-in caller goes to the audit log, whichever
/// handler refused: need-to-know is shown by what was refused as much as by
/// what was read. That is each 403, and each 404 that hides an object the
/// caller may not see ([`AppError::Hidden`]): the caller cannot tell it from
/// a missing one, the audit log can. The row names the route and path,
/// never the query string or the body.
async fn audit_refusals(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let res = next.call(req).await?;
    let hidden = res
        .response()
        .error()
        .and_then(|e| e.as_error::<AppError>())
        .is_some_and(AppError::is_hidden_refusal);
    if res.status() != StatusCode::FORBIDDEN && !hidden {
        return Ok(res);
    }
    let request = res.request();
    let Some(actor) = request.extensions().get::<Principal>().cloned() else {
        return Ok(res);
    };
    let Some(state) = request.app_data::<web::Data<AppState>>().cloned() else {
        return Ok(res);
    };
    let origin = Origin {
        request_id: request
            .extensions()
            .get::<tracing_actix_web::RequestId>()
            .map(|id| id.to_string()),
        client_ip: request.peer_addr().map(|a| a.ip().to_string()),
    };
    let route = request
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_string());
    let detail = format!("{} {}", request.method(), request.path());
    let recorded = state
        .db(move |conn| {
            write_tx(conn, |conn| {
                audit::record_refusal(conn, &origin, &actor, &route, &detail)
            })
        })
        .await;
    if let Err(err) = recorded {
        // The refusal stands; only its record is missing, and that is loud.
        tracing::error!(error = %err, "could not audit a refused request");
    }
    Ok(res)
}

async fn not_found() -> HttpResponse {
    AppError::NotFound("no such resource".into()).error_response()
}

fn method_not_allowed<B>(res: ServiceResponse<B>) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let (req, _) = res.into_parts();
    let response = AppError::MethodNotAllowed.error_response();
    Ok(ErrorHandlerResponse::Response(
        ServiceResponse::new(req, response).map_into_right_body(),
    ))
}
