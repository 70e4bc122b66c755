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

    pub fn submission_limits(&self) -> Limits {
        Limits {
            max_attachment_bytes: self.settings.max_attachment_bytes,
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

/// Request spans carry the request id (tracing-actix-web) and, once known,
/// the caller's user id; never a token.
pub struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &ServiceRequest) -> tracing::Span {
        let span = tracing_actix_web::root_span!(request, user_id = tracing::field::Empty);
        // The path only: a query string may carry an export's recipient or
        // purpose, in someone's words.
        span.record("http.target", request.path());
        span
    }

    /// Records the status only: the default also records the error's text,
    /// which may quote what the client sent.
    fn on_request_end<B: MessageBody>(
        span: tracing::Span,
        outcome: &Result<ServiceResponse<B>, Error>,
    ) {
        let status = match outcome {
            Ok(res) => res.status(),
            Err(err) => err.as_response_error().status_code(),
        };
        span.record("http.status_code", status.as_u16());
    }
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
        .app_data(
            web::PathConfig::default()
                .error_handler(|err, _| AppError::bad_request(format!("path: {err}")).into()),
        )
        .app_data(
            web::QueryConfig::default().error_handler(|err, _| {
                AppError::bad_request(format!("query string: {err}")).into()
            }),
        )
        .route("/healthz", web::get().to(http::ops::healthz))
        .route("/readyz", web::get().to(http::ops::readyz))
        .route("/metrics", web::get().to(http::ops::metrics))
        .configure(http::api::routes)
        .default_service(web::to(not_found))
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

/// Every refusal of a signed-in caller (403) goes to the audit log, whichever
/// handler refused: need-to-know is shown by what was refused as much as by
/// what was read. The row names the route and path, never the query string
/// or the body.
async fn audit_refusals(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let res = next.call(req).await?;
    if res.status() != StatusCode::FORBIDDEN {
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
