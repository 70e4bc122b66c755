//! Sign-in, sign-out and the password form.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;

use crate::app::{AppState, Audited};
use crate::audit::Origin;
use crate::auth::{tokens, Principal};
use crate::error::AppError;
use crate::http::sign_in::{self as flow, SignIn};

use super::i18n::Catalogue;
use super::session::{self, Session, SESSION_COOKIE, SIGN_IN_COOKIE};
use super::{page, see_other, Chrome, WebError};

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignInPage {
    chrome: Chrome,
    nonce: String,
    username: String,
    /// A catalogue key: why the last attempt failed.
    problem: Option<&'static str>,
}

fn sign_in_page(
    req: &HttpRequest,
    state: &AppState,
    status: StatusCode,
    username: String,
    problem: Option<&'static str>,
) -> Result<HttpResponse, WebError> {
    let (nonce, cookie) = session::sign_in_nonce(req, state);
    let mut res = page(
        status,
        &SignInPage {
            chrome: Chrome::anonymous(req),
            nonce,
            username,
            problem,
        },
    )?;
    res.add_cookie(&cookie).map_err(AppError::internal)?;
    Ok(res)
}

/// `GET /sign-in`.
pub async fn form(
    req: HttpRequest,
    state: web::Data<AppState>,
    signed_in: Result<Session, WebError>,
) -> Result<HttpResponse, WebError> {
    if signed_in.is_ok() {
        return Ok(see_other("/"));
    }
    sign_in_page(&req, &state, StatusCode::OK, String::new(), None)
}

#[derive(Deserialize)]
pub struct SignInForm {
    username: String,
    password: String,
    nonce: String,
}

/// `POST /sign-in`: the API's sign-in flow (throttle, audit) with the
/// session in a cookie.
pub async fn submit(
    req: HttpRequest,
    state: web::Data<AppState>,
    origin: Origin,
    form: web::Form<SignInForm>,
) -> Result<HttpResponse, WebError> {
    let SignInForm {
        username,
        password,
        nonce,
    } = form.into_inner();
    let expected = req.cookie(SIGN_IN_COOKIE).map(|c| c.value().to_string());
    if expected.as_deref() != Some(nonce.as_str()) || nonce.is_empty() {
        return sign_in_page(
            &req,
            &state,
            StatusCode::FORBIDDEN,
            username,
            Some("sign_in.expired_form"),
        );
    }
    let outcome = flow::sign_in(&state, origin, username.clone(), password).await;
    let signed = match outcome {
        Ok(SignIn::Ok(signed)) => signed,
        Ok(SignIn::WrongCredentials) => {
            return sign_in_page(
                &req,
                &state,
                StatusCode::UNAUTHORIZED,
                username,
                Some("sign_in.wrong"),
            )
        }
        Err(AppError::TooManyRequests { .. }) => {
            return sign_in_page(
                &req,
                &state,
                StatusCode::TOO_MANY_REQUESTS,
                username,
                Some("sign_in.throttled"),
            )
        }
        Err(other) => return Err(other.into()),
    };
    let lifetime = (signed.expires_at - crate::time::now()).num_seconds();
    let next = if signed.user.must_change_password {
        "/password"
    } else {
        "/"
    };
    let mut res = see_other(next);
    res.add_cookie(&session::session_cookie(
        &req,
        &state,
        signed.token,
        lifetime,
    ))
    .map_err(AppError::internal)?;
    res.add_removal_cookie(&session::removal(&req, &state, SIGN_IN_COOKIE))
        .map_err(AppError::internal)?;
    Ok(res)
}

#[derive(Deserialize)]
pub struct CsrfOnly {
    csrf: String,
}

/// `POST /sign-out`: revokes the session (audited) and forgets the cookie.
pub async fn sign_out(
    req: HttpRequest,
    state: web::Data<AppState>,
    origin: Origin,
    session: Session,
    form: web::Form<CsrfOnly>,
) -> Result<HttpResponse, WebError> {
    session.check_csrf(&form.csrf)?;
    let token_id = session.principal.token_id.clone();
    state
        .audited(origin, session.principal, "logout", move |conn| {
            tokens::revoke(conn, &token_id)?;
            Ok(((), Audited::object("token", token_id.as_str())))
        })
        .await?;
    let mut res = see_other("/sign-in");
    res.add_removal_cookie(&session::removal(&req, &state, SESSION_COOKIE))
        .map_err(AppError::internal)?;
    Ok(res)
}

#[derive(Template)]
#[template(path = "password.html")]
struct PasswordPage {
    chrome: Chrome,
    one_time: bool,
    /// Catalogue keys, or the server's own words for a refused password.
    problem: Option<String>,
    done: bool,
}

fn password_page(
    req: &HttpRequest,
    session: &Session,
    status: StatusCode,
    problem: Option<String>,
    done: bool,
) -> Result<HttpResponse, WebError> {
    page(
        status,
        &PasswordPage {
            chrome: Chrome::signed_in(req, session),
            one_time: session.principal.must_change_password,
            problem,
            done,
        },
    )
}

/// `GET /password`.
pub async fn password_form(req: HttpRequest, session: Session) -> Result<HttpResponse, WebError> {
    password_page(&req, &session, StatusCode::OK, None, false)
}

#[derive(Deserialize)]
pub struct PasswordForm {
    csrf: String,
    current_password: String,
    new_password: String,
    repeat_password: String,
}

/// `POST /password`: the API's change (every session ends); this browser
/// gets the fresh session.
pub async fn change_password(
    req: HttpRequest,
    state: web::Data<AppState>,
    origin: Origin,
    session: Session,
    form: web::Form<PasswordForm>,
) -> Result<HttpResponse, WebError> {
    session.check_csrf(&form.csrf)?;
    let PasswordForm {
        current_password,
        new_password,
        repeat_password,
        ..
    } = form.into_inner();
    if new_password != repeat_password {
        let t = Catalogue::of(&req);
        return password_page(
            &req,
            &session,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some(t.s("password.mismatch").to_string()),
            false,
        );
    }
    let changed = flow::change_password(
        &state,
        origin,
        session.principal.clone(),
        current_password,
        new_password,
    )
    .await;
    let issued = match changed {
        Ok(issued) => issued,
        // Why it was refused, in the server's words (which field, why).
        Err(AppError::Validation { errors, detail }) => {
            let t = Catalogue::of(&req);
            let why = errors
                .iter()
                .map(|e| {
                    let field = match e.pointer.as_str() {
                        "/current_password" => t.s("password.current"),
                        _ => t.s("password.new"),
                    };
                    format!("{field}: {}", e.message)
                })
                .collect::<Vec<_>>()
                .join("; ");
            let why = if why.is_empty() { detail } else { why };
            return password_page(
                &req,
                &session,
                StatusCode::UNPROCESSABLE_ENTITY,
                Some(why),
                false,
            );
        }
        Err(other) => return Err(other.into()),
    };
    let lifetime = (issued.info.expires_at - crate::time::now()).num_seconds();
    let fresh = Session {
        principal: Principal {
            token_id: issued.info.id.clone(),
            must_change_password: false,
            ..session.principal
        },
        token: issued.token.clone(),
    };
    let mut res = password_page(&req, &fresh, StatusCode::OK, None, true)?;
    res.add_cookie(&session::session_cookie(
        &req,
        &state,
        issued.token,
        lifetime,
    ))
    .map_err(AppError::internal)?;
    Ok(res)
}
