//! The console's sign-in state: a session token from the same token store
//! as the API's, kept in an HttpOnly, SameSite=Strict cookie (Secure under
//! TLS), and the CSRF token every state-changing form carries.
//!
//! CSRF: a signed-in form carries a value derived from the session token
//! (which script cannot read: HttpOnly), so another site cannot forge it;
//! the sign-in form, before any session, carries a random value also set
//! as a cookie (double submit).

use actix_web::cookie::{time::Duration as CookieDuration, Cookie, SameSite};
use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpMessage, HttpRequest};
use futures_util::future::LocalBoxFuture;
use sha2::{Digest, Sha256};

use crate::app::AppState;
use crate::auth::{tokens, Principal};
use crate::http::extract;

use super::WebError;

pub const SESSION_COOKIE: &str = "casesync_session";
pub const SIGN_IN_COOKIE: &str = "casesync_sign_in";

/// Whether this browser's cookies must ask for TLS (`Secure`): the request
/// came over TLS by the server's one rule (`extract::over_tls`: its own
/// TLS, a trusted proxy's word, or loopback with no proxy configured), or
/// the server's public address is https.
pub fn secure(req: &HttpRequest, state: &AppState) -> bool {
    extract::over_tls(req, &state.settings)
        || state
            .settings
            .public_url
            .as_deref()
            .is_some_and(|u| u.starts_with("https://"))
}

fn cookie(
    req: &HttpRequest,
    state: &AppState,
    name: &'static str,
    value: String,
) -> Cookie<'static> {
    Cookie::build(name, value)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure(req, state))
        .finish()
}

/// The session cookie for `token`, living as long as the session.
pub fn session_cookie(
    req: &HttpRequest,
    state: &AppState,
    token: String,
    lifetime_secs: i64,
) -> Cookie<'static> {
    let mut c = cookie(req, state, SESSION_COOKIE, token);
    c.set_max_age(CookieDuration::seconds(lifetime_secs.max(0)));
    c
}

/// A cookie that tells the browser to forget `name`.
pub fn removal(req: &HttpRequest, state: &AppState, name: &'static str) -> Cookie<'static> {
    let mut c = cookie(req, state, name, String::new());
    c.make_removal();
    c
}

/// A fresh random value for the sign-in form and its cookie.
pub fn sign_in_nonce(req: &HttpRequest, state: &AppState) -> (String, Cookie<'static>) {
    let nonce = hex::encode(rand::random::<[u8; 16]>());
    (nonce.clone(), cookie(req, state, SIGN_IN_COOKIE, nonce))
}

/// The CSRF value of the session whose token is `token`.
pub fn csrf_of(token: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(b"casesync console csrf\0");
    hash.update(token.as_bytes());
    hex::encode(&hash.finalize()[..16])
}

/// Whether `sent` is the CSRF value of the session `token`; compared in
/// constant time.
pub fn csrf_matches(token: &str, sent: &str) -> bool {
    let expected = csrf_of(token);
    expected.len() == sent.len()
        && expected
            .bytes()
            .zip(sent.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// A signed-in console user (possibly one who must still change a
/// one-time password: pages other than the password form refuse them).
pub struct Session {
    pub principal: Principal,
    /// The session token (never shown; the CSRF value is derived from it).
    pub token: String,
}

impl Session {
    pub fn csrf(&self) -> String {
        csrf_of(&self.token)
    }

    /// Refuses a form whose CSRF value is not this session's.
    pub fn check_csrf(&self, sent: &str) -> Result<(), WebError> {
        if csrf_matches(&self.token, sent) {
            Ok(())
        } else {
            Err(WebError::Csrf)
        }
    }

    /// [`Session::check_csrf`] for a form read as pairs (one with repeated
    /// names, such as checkboxes of sites).
    pub fn check_csrf_in(&self, form: &[(String, String)]) -> Result<(), WebError> {
        let sent = form
            .iter()
            .find(|(k, _)| k == "csrf")
            .map_or("", |(_, v)| v.as_str());
        self.check_csrf(sent)
    }
}

impl FromRequest for Session {
    type Error = WebError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let token = req
                .cookie(SESSION_COOKIE)
                .map(|c| c.value().to_string())
                .filter(|t| !t.is_empty())
                .ok_or(WebError::SignInNeeded)?;
            let state = extract::state(&req)?;
            let secret = token.clone();
            let (principal, stale) = state
                .db(move |conn| tokens::authenticate(conn, &secret))
                .await?
                .ok_or(WebError::SignInNeeded)?;
            extract::note_token_use(&state, &principal, stale);
            tracing::Span::current().record("user_id", principal.user_id.as_str());
            req.extensions_mut().insert(principal.clone());
            Ok(Session { principal, token })
        })
    }
}

/// A signed-in console user with no pending password change.
pub struct WebUser(pub Session);

impl FromRequest for WebUser {
    type Error = WebError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let session = Session::from_request(req, payload);
        Box::pin(async move {
            let session = session.await?;
            if session.principal.must_change_password {
                return Err(WebError::PasswordChangeNeeded);
            }
            Ok(WebUser(session))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_csrf_value_belongs_to_one_session() {
        let a = csrf_of("cs_one");
        assert_eq!(a.len(), 32);
        assert!(csrf_matches("cs_one", &a));
        assert!(!csrf_matches("cs_two", &a));
        assert!(!csrf_matches("cs_one", ""));
        assert!(!csrf_matches("cs_one", &a[..31]));
    }
}
