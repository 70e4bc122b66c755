//! The web console (`/`): server-rendered pages for coordinators and
//! admins, over the same domain functions, access policy and audit as the
//! JSON API. Handlers only: sign-in state in [`session`], words in
//! [`i18n`], templates in `server/templates/` (askama, checked at compile
//! time), the style sheet in `server/static/`.
//!
//! Every page answers with a strict Content-Security-Policy (nothing
//! inline, nothing from elsewhere, no framing); every state-changing form
//! carries a CSRF value; errors are pages in the reader's language.

pub mod audit;
mod case;
mod cases;
mod exports;
mod forms;
mod held;
pub mod i18n;
mod indicators;
pub mod people;
pub mod session;
mod sign_in;
mod submission;
mod today;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use askama::Template;

use crate::auth::Principal;
use crate::error::AppError;

use i18n::Catalogue;

/// The console's policy: its own style sheet and forms, nothing else.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const STYLE: &str = include_str!("../../../static/console.css");

pub fn routes(cfg: &mut web::ServiceConfig) {
    // Resources one by one, not a scope: a scope at `/` would take every
    // path the API and OpenRosa doors do not, and their 404s with it.
    let resource = |path: &str| web::resource(path).wrap(from_fn(error_pages));
    cfg.service(resource("/").route(web::get().to(home)))
        .service(resource("/static/console.css").route(web::get().to(style)))
        .service(
            resource("/sign-in")
                .route(web::get().to(sign_in::form))
                .route(web::post().to(sign_in::submit)),
        )
        .service(resource("/sign-out").route(web::post().to(sign_in::sign_out)))
        .service(resource("/language/{code}").route(web::get().to(language)))
        .service(
            resource("/password")
                .route(web::get().to(sign_in::password_form))
                .route(web::post().to(sign_in::change_password)),
        )
        .service(resource("/today").route(web::get().to(today::page)))
        .service(resource("/cases").route(web::get().to(cases::page)))
        .service(resource("/cases/{id}").route(web::get().to(case::page)))
        .service(resource("/cases/{id}/assignment").route(web::post().to(case::assign)))
        .service(resource("/cases/{id}/approvals").route(web::post().to(case::approve)))
        .service(resource("/cases/{id}/siblings").route(web::post().to(case::link_siblings)))
        .service(resource("/conflicts/{id}/resolution").route(web::post().to(case::resolve)))
        .service(
            resource("/children/duplicates/{id}/{decision}")
                .route(web::post().to(case::decide_duplicate)),
        )
        .service(resource("/submissions/{id}").route(web::get().to(submission::page)))
        .service(resource("/held/{id}").route(web::get().to(held::page)))
        .service(resource("/held/{id}/dismissal").route(web::post().to(held::dismiss)))
        .service(resource("/held/{id}/correction").route(web::post().to(held::correct)))
        .service(resource("/indicators").route(web::get().to(indicators::page)))
        .service(resource("/indicators.csv").route(web::get().to(indicators::csv)))
        .service(resource("/exports").route(web::get().to(exports::page)))
        .service(
            resource("/exports/download")
                .route(web::get().to(exports::download))
                .route(web::post().to(exports::download_identifying)),
        )
        .service(resource("/exports/disclosure").route(web::get().to(exports::disclosure)))
        .service(resource("/forms").route(web::get().to(forms::list)))
        .service(resource("/forms/drafts").route(web::post().to(forms::upload)))
        .service(resource("/forms/{id}").route(web::get().to(forms::form)))
        .service(resource("/forms/{id}/publish").route(web::post().to(forms::publish)))
        .service(
            resource("/forms/{id}/versions/{version}/retire").route(web::post().to(forms::retire)),
        )
        .service(
            resource("/people")
                .route(web::get().to(people::list))
                .route(web::post().to(people::create_user)),
        )
        .service(
            resource("/people/{id}")
                .route(web::get().to(people::person))
                .route(web::post().to(people::update_user)),
        )
        .service(resource("/people/{id}/tokens").route(web::post().to(people::create_token)))
        .service(resource("/people/{id}/password").route(web::post().to(people::reset_password)))
        .service(resource("/tokens/{id}/revoke").route(web::post().to(people::revoke_token)))
        .service(resource("/audit").route(web::get().to(audit::page)))
        .service(resource("/audit.csv").route(web::get().to(audit::csv)))
        .service(
            resource("/audit/chain")
                .route(web::get().to(audit::chain))
                .route(web::post().to(audit::start_chain_check)),
        );
}

/// What every page shows around its content.
pub struct Chrome {
    pub t: &'static Catalogue,
    /// The signed-in user's name and role, for the header.
    pub user: Option<(String, &'static str)>,
    /// The CSRF value for the sign-out form.
    pub csrf: Option<String>,
    /// This page's path and query, to come back to after a language change.
    pub here: String,
}

impl Chrome {
    pub fn anonymous(req: &HttpRequest) -> Chrome {
        Chrome {
            t: Catalogue::of(req),
            user: None,
            csrf: None,
            here: req
                .uri()
                .path_and_query()
                .map_or("/".to_string(), |p| p.to_string()),
        }
    }

    pub fn signed_in(req: &HttpRequest, session: &session::Session) -> Chrome {
        Chrome {
            user: Some(user_line(&session.principal)),
            csrf: Some(session.csrf()),
            ..Chrome::anonymous(req)
        }
    }

    /// Every language the console speaks, each named in itself.
    pub fn languages(&self) -> Vec<(&'static str, &'static str)> {
        Catalogue::all()
            .iter()
            .map(|c| (c.lang, c.s("language.name")))
            .collect()
    }
}

fn user_line(who: &Principal) -> (String, &'static str) {
    let role = match who.role.as_str() {
        "admin" => "role.admin",
        "coordinator" => "role.coordinator",
        "field_worker" => "role.field_worker",
        "analyst" => "role.analyst",
        _ => "role.viewer",
    };
    (who.username.clone(), role)
}

/// A rendered page with the console's headers.
pub fn page(status: StatusCode, template: &impl Template) -> Result<HttpResponse, WebError> {
    let html = template
        .render()
        .map_err(|e| WebError::App(AppError::internal(format!("template: {e}"))))?;
    Ok(HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .body(html))
}

/// A programme-local time (RFC 3339 with its offset) as people read it:
/// `2026-11-20 21:00`, in the programme's zone as given.
pub fn local_time(rfc3339: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|_| rfc3339.to_string())
}

/// A redirect after a form (303: the browser follows with a GET).
pub fn see_other(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to))
        .finish()
}

async fn home(session: Result<session::Session, WebError>) -> HttpResponse {
    match session {
        Ok(_) => see_other("/today"),
        Err(_) => see_other("/sign-in"),
    }
}

#[derive(serde::Deserialize)]
struct Back {
    back: Option<String>,
}

/// `GET /language/{code}?back=/path`: keeps the reader's choice of
/// language in a cookie and goes back to the page. Only a path of this
/// server is gone back to (never another site: no open redirect).
async fn language(
    req: HttpRequest,
    state: web::Data<crate::app::AppState>,
    code: web::Path<String>,
    query: web::Query<Back>,
) -> Result<HttpResponse, WebError> {
    let back = query
        .back
        .as_deref()
        .filter(|b| b.starts_with('/') && !b.starts_with("//") && !b.contains('\\'))
        .unwrap_or("/");
    let mut res = see_other(back);
    if let Some(chosen) = Catalogue::all().iter().find(|c| c.lang == code.as_str()) {
        let mut cookie = actix_web::cookie::Cookie::build(i18n::LANG_COOKIE, chosen.lang)
            .path("/")
            .same_site(actix_web::cookie::SameSite::Lax)
            .secure(session::secure(&req, &state))
            .finish();
        cookie.set_max_age(actix_web::cookie::time::Duration::days(365));
        res.add_cookie(&cookie).map_err(AppError::internal)?;
    }
    Ok(res)
}

async fn style() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "max-age=3600"))
        .body(STYLE)
}

/// Why a console request ended otherwise than planned.
#[derive(Debug)]
pub enum WebError {
    /// No session (or an ended one): to the sign-in page.
    SignInNeeded,
    /// A one-time password must be changed first: to the password page.
    PasswordChangeNeeded,
    /// A form without this session's CSRF value.
    Csrf,
    App(AppError),
}

impl From<AppError> for WebError {
    fn from(e: AppError) -> Self {
        WebError::App(e)
    }
}

impl std::fmt::Display for WebError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WebError::SignInNeeded => f.write_str("sign-in needed"),
            WebError::PasswordChangeNeeded => f.write_str("password change needed"),
            WebError::Csrf => f.write_str("the form's CSRF value is missing or wrong"),
            WebError::App(e) => e.fmt(f),
        }
    }
}

/// Marks an error answer for [`error_pages`], which writes its page in the
/// reader's language (an error has no request to take it from), with what
/// was wrong when the reader can act on it (a value refused, a step the
/// case is not at).
#[derive(Clone)]
struct ErrorPage(&'static str, Option<String>);

impl ResponseError for WebError {
    fn status_code(&self) -> StatusCode {
        match self {
            WebError::SignInNeeded | WebError::PasswordChangeNeeded => StatusCode::SEE_OTHER,
            WebError::Csrf => StatusCode::FORBIDDEN,
            WebError::App(e) => e.status_code(),
        }
    }

    fn error_response(&self) -> HttpResponse {
        let (mut res, message, detail) = match self {
            WebError::SignInNeeded => return see_other("/sign-in"),
            WebError::PasswordChangeNeeded => return see_other("/password"),
            WebError::Csrf => (
                HttpResponse::Forbidden().finish(),
                "sign_in.expired_form",
                None,
            ),
            // The API's answer keeps its status, headers (Retry-After) and
            // what it does on the way (logging a cause, auditing a
            // refusal); only its body becomes a page.
            WebError::App(e) => {
                let res = e.error_response();
                let message = match res.status() {
                    StatusCode::FORBIDDEN => "error.forbidden",
                    StatusCode::NOT_FOUND => "error.not_found",
                    StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => "error.busy",
                    s if s.is_client_error() => "error.bad_request",
                    _ => "error.internal",
                };
                // Refusals of what was sent say why; 403 and 404 say no
                // more than the API does, and server errors nothing.
                let detail = matches!(
                    res.status(),
                    StatusCode::BAD_REQUEST
                        | StatusCode::CONFLICT
                        | StatusCode::UNPROCESSABLE_ENTITY
                )
                .then(|| e.to_string());
                (res, message, detail)
            }
        };
        res.extensions_mut().insert(ErrorPage(message, detail));
        res
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorTemplate {
    chrome: Chrome,
    message: &'static str,
    detail: Option<String>,
    request_id: Option<String>,
}

/// Writes the page of an error answer marked by [`WebError`].
async fn error_pages(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let res = next.call(req).await?;
    let Some(ErrorPage(message, detail)) = res.response().extensions().get::<ErrorPage>().cloned()
    else {
        return Ok(res.map_into_boxed_body());
    };
    let t = Catalogue::of(res.request());
    let chrome = Chrome::anonymous(res.request());
    let request_id = res
        .request()
        .extensions()
        .get::<tracing_actix_web::RequestId>()
        .map(|id| id.to_string());
    let status = res.status();
    let html = ErrorTemplate {
        chrome,
        message,
        detail,
        request_id,
    }
    .render()
    .unwrap_or_else(|_| t.s(message).to_string());
    Ok(res.map_body(|head, _| {
        head.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/html; charset=utf-8"),
        );
        head.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            header::HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
        head.status = status;
        BoxBody::new(html)
    }))
}
