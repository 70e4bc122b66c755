//! HTTP: the application with its routes and middleware ([`build`]), and
//! the handlers — parse, check access, call one domain function, render.

pub mod api;
pub mod console;
pub mod extract;
pub mod middleware;
pub mod openrosa;
pub mod ops;
pub mod sign_in;

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::{from_fn, DefaultHeaders, ErrorHandlers};
use actix_web::{web, App, Error, HttpMessage};
use futures_util::FutureExt;
use tracing_actix_web::TracingLogger;

use crate::app::AppState;
use crate::error::AppError;

/// The actix application on `state`: every route and middleware, in one
/// place.
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
            let why = extract::without_values(&err.to_string());
            AppError::bad_request(format!("path: {why}")).into()
        }))
        .app_data(web::QueryConfig::default().error_handler(|err, _| {
            let why = extract::without_values(&err.to_string());
            AppError::bad_request(format!("query string: {why}")).into()
        }))
        .route("/healthz", web::get().to(ops::healthz))
        .route("/readyz", web::get().to(ops::readyz))
        .route("/metrics", web::get().to(ops::metrics))
        .configure(openrosa::routes)
        .configure(api::routes)
        .configure(console::routes)
        .default_service(web::to(middleware::not_found))
        .wrap(from_fn(middleware::refuse_credentials_in_query))
        .wrap(from_fn(middleware::audit_refusals))
        .wrap(ErrorHandlers::new().handler(
            StatusCode::METHOD_NOT_ALLOWED,
            middleware::method_not_allowed,
        ))
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
        .wrap(TracingLogger::<middleware::RequestSpan>::new())
}
