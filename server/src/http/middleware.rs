//! The middleware every request passes through: request spans (what a log
//! line may hold), refusing credentials in query strings, auditing
//! refusals, and the answers for unknown routes and methods.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::{ErrorHandlerResponse, Next};
use actix_web::{web, Error, HttpMessage, HttpResponse, ResponseError};
use tracing_actix_web::RootSpanBuilder;

use crate::app::AppState;
use crate::audit::{self, Origin};
use crate::auth::Principal;
use crate::db::write_tx;
use crate::error::AppError;

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
            http.target = %redacted_path(request.path()),
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

/// A request path as logs and audit rows may hold it: the device token of
/// an OpenRosa key path (`/odk/key/{token}/…`, docs/odk.md) replaced.
pub fn redacted_path(path: &str) -> std::borrow::Cow<'_, str> {
    let Some(rest) = path.strip_prefix("/odk/key/") else {
        return path.into();
    };
    let after = rest.find('/').map_or("", |i| &rest[i..]);
    format!("/odk/key/[redacted]{after}").into()
}

/// A credential in the query string is refused (400) before routing,
/// authentication or any handler sees the request; see
/// [`super::extract::carries_credential`].
pub(super) async fn refuse_credentials_in_query(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    if super::extract::carries_credential(req.query_string()) {
        let response = super::extract::credential_in_query().error_response();
        return Ok(req.into_response(response).map_into_right_body());
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_left_body)
}

/// Every refusal of a signed-in caller goes to the audit log, whichever
/// handler refused: need-to-know is shown by what was refused as much as by
/// what was read. That is each 403, and each 404 that hides an object the
/// caller may not see ([`AppError::Hidden`]): the caller cannot tell it from
/// a missing one, the audit log can. The row names the route and path,
/// never the query string or the body.
pub(super) async fn audit_refusals(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let res = next.call(req).await?;
    // The console's pages carry the API's error inside their own.
    let hidden = res
        .response()
        .error()
        .and_then(|e| {
            e.as_error::<AppError>().or_else(|| match e.as_error() {
                Some(crate::http::console::WebError::App(inner)) => Some(inner),
                _ => None,
            })
        })
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
    let detail = format!("{} {}", request.method(), redacted_path(request.path()));
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

pub(super) async fn not_found() -> HttpResponse {
    AppError::NotFound("no such resource".into()).error_response()
}

pub(super) fn method_not_allowed<B>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let (req, _) = res.into_parts();
    let response = AppError::MethodNotAllowed.error_response();
    Ok(ErrorHandlerResponse::Response(
        ServiceResponse::new(req, response).map_into_right_body(),
    ))
}
