//! Extractors shared by the handlers: the authenticated caller, JSON bodies
//! with located errors, and the request's origin for the audit log.

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use futures_util::future::LocalBoxFuture;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use crate::app::AppState;
use crate::audit::Origin;
use crate::auth::{tokens, Principal};
use crate::config::Settings;
use crate::error::AppError;
pub use crate::json::parse_json;

/// An authenticated caller who has no pending forced password change.
#[derive(Debug, Clone)]
pub struct AuthUser(pub Principal);

/// An authenticated caller, even one who must still change a one-time
/// password: only `/me`, password change and logout take this.
#[derive(Debug, Clone)]
pub struct AnyAuthUser(pub Principal);

/// The token of an `Authorization: Bearer <token>` header, if the request
/// has one (both front doors read it).
pub fn bearer_token(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty())
        .then(|| token.trim().to_string())
}

fn bearer(req: &HttpRequest) -> Result<String, AppError> {
    let value = req.headers().get(header::AUTHORIZATION).ok_or_else(|| {
        AppError::Unauthorized("an Authorization: Bearer token is required".into())
    })?;
    value
        .to_str()
        .map_err(|_| AppError::Unauthorized("the Authorization header is not valid".into()))?;
    bearer_token(req).ok_or_else(|| {
        AppError::Unauthorized("the Authorization header must be 'Bearer <token>'".into())
    })
}

/// Has the committer stamp the token's `last_used_at` with its next group
/// when `tokens::authenticate` found it stale: advisory (shown on a
/// person's page), so no request waits for a write to record it.
pub fn note_token_use(state: &AppState, principal: &Principal, stale: bool) {
    if stale {
        state
            .committer
            .touch_soon(principal.token_id.clone(), crate::time::now());
    }
}

async fn authenticate(req: HttpRequest) -> Result<Principal, AppError> {
    let secret = bearer(&req)?;
    let state = state(&req)?;
    let (principal, stale) = state
        .db(move |conn| tokens::authenticate(conn, &secret))
        .await?
        .ok_or_else(|| AppError::Unauthorized("the token is unknown, expired or revoked".into()))?;
    note_token_use(&state, &principal, stale);
    // Lets the request log name the actor without ever seeing the token.
    tracing::Span::current().record("user_id", principal.user_id.as_str());
    req.extensions_mut().insert(principal.clone());
    Ok(principal)
}

/// How a request reached us, as far as we can tell: the one copy of the
/// "is this request TLS" rule ([`over_tls`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Our own `tls`, or a proxy in `trusted_proxies` that says
    /// `X-Forwarded-Proto: https` (its last value, the one the nearest
    /// proxy wrote).
    Tls,
    /// A loopback peer while no proxy is configured: taken to be a proxy
    /// on this host that ended TLS, which we cannot check.
    Loopback,
    /// Anything else: a direct peer, a configured proxy without the
    /// header, anyone else's header, or loopback once a proxy is
    /// configured (a same-host proxy forwards plain requests too).
    Plain,
}

pub fn transport(req: &HttpRequest, settings: &Settings) -> Transport {
    if settings.tls.is_some() {
        return Transport::Tls;
    }
    let Some(peer) = req.peer_addr().map(|a| a.ip().to_canonical()) else {
        return Transport::Plain;
    };
    if settings.trusted_proxies.is_empty() {
        return match peer.is_loopback() {
            true => Transport::Loopback,
            false => Transport::Plain,
        };
    }
    if !settings.trusted_proxies.contains(&peer) {
        return Transport::Plain;
    }
    let protos = req.headers().get_all("x-forwarded-proto");
    let last = protos
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .last();
    match last.is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https")) {
        true => Transport::Tls,
        false => Transport::Plain,
    }
}

/// Whether the request may be treated as having come over TLS (plaintext
/// ODK uploads need it; a web console's `Secure` cookie will): TLS, or
/// loopback while no proxy is configured ([`transport`]).
pub fn over_tls(req: &HttpRequest, settings: &Settings) -> bool {
    transport(req, settings) != Transport::Plain
}

pub fn state(req: &HttpRequest) -> Result<web::Data<AppState>, AppError> {
    req.app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(|| AppError::internal("application state is missing"))
}

impl FromRequest for AuthUser {
    type Error = AppError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let principal = authenticate(req).await?;
            if principal.must_change_password {
                return Err(AppError::PasswordChangeRequired);
            }
            Ok(AuthUser(principal))
        })
    }
}

impl FromRequest for AnyAuthUser {
    type Error = AppError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { authenticate(req).await.map(AnyAuthUser) })
    }
}

impl FromRequest for Origin {
    type Error = AppError;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let request_id = req
            .extensions()
            .get::<tracing_actix_web::RequestId>()
            .map(|id| id.to_string());
        let client_ip = req.peer_addr().map(|a| a.ip().to_string());
        std::future::ready(Ok(Origin {
            request_id,
            client_ip,
        }))
    }
}

/// Reads a whole body, refusing it (413) as soon as it passes `limit`.
async fn read_limited(payload: &mut Payload, limit: usize) -> Result<web::BytesMut, AppError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| AppError::bad_request(format!("reading the body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(AppError::PayloadTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An encrypted submission: `Content-Type: application/jose` (415
/// otherwise), within `max_submission_bytes` (413), ASCII (400).
#[derive(Debug)]
pub struct JoseBody(pub String);

impl FromRequest for JoseBody {
    type Error = AppError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limit = req
            .app_data::<web::Data<AppState>>()
            .map(|s| s.settings.max_submission_bytes)
            .unwrap_or(5 * 1024 * 1024);
        read_jose(req, payload, limit, "submission")
    }
}

/// A JWE in compact serialization: five base64url parts (protected header,
/// encrypted key, IV, ciphertext, tag), as the OpenAPI document says.
impl utoipa::PartialSchema for JoseBody {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .pattern(Some("^[A-Za-z0-9_-]+(\\.[A-Za-z0-9_-]+){4}$"))
            .description(Some(
                "A JWE in compact serialization (RSA-OAEP-256, A256GCM)",
            ))
            .into()
    }
}

impl utoipa::ToSchema for JoseBody {}

/// An attachment as a JWE: like [`JoseBody`], within the attachment limit
/// (the plaintext limit, a third more for base64url, and room for headers).
#[derive(Debug)]
pub struct AttachmentBody(pub String);

impl FromRequest for AttachmentBody {
    type Error = AppError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let plaintext_limit = req
            .app_data::<web::Data<AppState>>()
            .map(|s| s.settings.max_attachment_bytes)
            .unwrap_or(10_000_000) as usize;
        let limit = plaintext_limit / 3 * 4 + 64 * 1024;
        let read = read_jose(req, payload, limit, "attachment");
        Box::pin(async move { read.await.map(|JoseBody(body)| AttachmentBody(body)) })
    }
}

fn read_jose(
    req: &HttpRequest,
    payload: &mut Payload,
    limit: usize,
    what: &'static str,
) -> LocalBoxFuture<'static, Result<JoseBody, AppError>> {
    let jose = matches!(req.mime_type(), Ok(Some(m)) if m.type_() == "application" && m.subtype() == "jose");
    let mut payload = payload.take();
    Box::pin(async move {
        if !jose {
            return Err(AppError::UnsupportedMediaType(format!(
                "a {what} must be sent as Content-Type: application/jose (JWE compact serialization)"
            )));
        }
        let body = read_limited(&mut payload, limit).await?;
        String::from_utf8(body.to_vec())
            .ok()
            .filter(|s| s.is_ascii())
            .map(JoseBody)
            .ok_or_else(|| {
                AppError::bad_request(format!(
                    "the {what} could not be read: not a JWE in compact serialization"
                ))
            })
    })
}

/// A batch of encrypted submissions: `{"submissions": ["<JWE>", …]}`.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    /// Each a JWE as `POST /submissions` takes it.
    #[schema(min_items = 1, max_items = 100)]
    pub submissions: Vec<String>,
}

/// A [`Batch`] as `application/json`, within `max_batch_bytes`, read but
/// not parsed: parsing megabytes is work for the CPU pool, not for an HTTP
/// worker ([`Batch::parse`]).
#[derive(Debug)]
pub struct BatchBody(pub web::BytesMut);

impl Batch {
    pub fn parse(body: &[u8]) -> Result<Batch, AppError> {
        parse_json(body)
    }
}

impl FromRequest for BatchBody {
    type Error = AppError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limit = req
            .app_data::<web::Data<AppState>>()
            .map(|s| s.settings.max_batch_bytes)
            .unwrap_or(20 * 1024 * 1024);
        let json = is_json(req);
        let mut payload = payload.take();
        Box::pin(async move {
            if !json {
                return Err(AppError::UnsupportedMediaType(
                    "a batch must be sent as Content-Type: application/json".into(),
                ));
            }
            read_limited(&mut payload, limit).await.map(BatchBody)
        })
    }
}

/// A JSON request body: `application/json` (415 otherwise), within the
/// configured size (413), and deserialised with the JSON pointer of the first
/// thing wrong (400), unknown fields included.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

/// A JSON request body checked like [`ApiJson`]'s but not parsed yet: for
/// a body whose parsing belongs on the CPU pool (`parse_json` there).
#[derive(Debug)]
pub struct JsonBody(pub web::BytesMut);

fn is_json(req: &HttpRequest) -> bool {
    match req.mime_type() {
        Ok(Some(mime)) => {
            mime.type_() == "application"
                && (mime.subtype() == "json" || mime.suffix().is_some_and(|s| s == "json"))
        }
        _ => false,
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for ApiJson<T> {
    type Error = AppError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let body = JsonBody::from_request(req, payload);
        Box::pin(async move { parse_json(&body.await?.0).map(ApiJson) })
    }
}

impl FromRequest for JsonBody {
    type Error = AppError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limit = req
            .app_data::<web::Data<AppState>>()
            .map(|s| s.settings.max_body_bytes)
            .unwrap_or(1024 * 1024);
        let json = is_json(req);
        let declared_len = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let mut payload = payload.take();
        Box::pin(async move {
            if !json {
                return Err(AppError::UnsupportedMediaType(
                    "the body must be sent as Content-Type: application/json".into(),
                ));
            }
            if declared_len.is_some_and(|len| len > limit) {
                return Err(AppError::PayloadTooLarge { limit });
            }
            read_limited(&mut payload, limit).await.map(JsonBody)
        })
    }
}

/// Query parameters that name a credential. A URL is kept in proxy and
/// server logs, browser history and `Referer` headers: a token there is as
/// good as published, so such a request is refused before anything reads it.
const CREDENTIAL_PARAMETERS: &[&str] = &[
    "access_token",
    "token",
    "bearer",
    "auth",
    "authorization",
    "api_key",
    "apikey",
    "key",
    "secret",
    "password",
    "session",
];

/// `%XX` and `+` decoded, leniently (a bad escape stays as it is): enough to
/// see what a parameter says, however it was spelt.
fn url_decoded(part: &str) -> String {
    let bytes = part.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(high), Some(low)) => {
                        out.push((high * 16 + low) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether a query string carries a credential: a parameter named like one
/// (`access_token`, `*_token`, `api_key`…), or a value that is one of our
/// tokens (`cs_…`, bare or after `Bearer`).
pub fn carries_credential(query: &str) -> bool {
    query.split(['&', ';']).any(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = url_decoded(name).trim().to_ascii_lowercase();
        let value = url_decoded(value);
        let value = value.trim();
        let value = value
            .get(..7)
            .filter(|p| p.eq_ignore_ascii_case("bearer "))
            .map_or(value, |_| value[7..].trim_start());
        CREDENTIAL_PARAMETERS.contains(&name.as_str())
            || name.ends_with("_token")
            || name.ends_with("-token")
            || value.starts_with(tokens::PREFIX)
    })
}

/// The refusal of a credential in a URL (400), the same for every route.
pub fn credential_in_query() -> AppError {
    AppError::bad_request(
        "a token was sent in the URL, which is kept in logs and browser history: \
         send it only in the header 'Authorization: Bearer <token>' (nothing was done; \
         if the token was real, revoke it)",
    )
}

/// What a query string or path could not be read as, without the values
/// that were sent: serde quotes them (`unknown variant `…``, `invalid type:
/// string "…"`), and a query may hold a name or an export's terms. Field
/// names and what was expected are kept.
pub fn without_values(message: &str) -> String {
    if message.starts_with("missing field") || message.starts_with("duplicate field") {
        return message.to_string();
    }
    let (sent, expected) = match message.find(", expected") {
        Some(i) => message.split_at(i),
        None => (message, ""),
    };
    let mut out = String::with_capacity(sent.len());
    let mut quote: Option<char> = None;
    for c in sent.chars() {
        match quote {
            Some(q) if c == q => {
                out.push('…');
                out.push(c);
                quote = None;
            }
            Some(_) => {}
            None => {
                out.push(c);
                if c == '`' || c == '"' {
                    quote = Some(c);
                }
            }
        }
    }
    out.push_str(expected);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_a_query_are_recognised_however_spelt() {
        for query in [
            "access_token=cs_abc",
            "programme=kz&ACCESS_TOKEN=x",
            "access%5Ftoken=x",
            "id_token=x",
            "api_key=1",
            "q=cs_AAAAAAAA",
            "q=Bearer%20cs_AAAA",
            "q=bearer+cs_AAAA",
            "token",
        ] {
            assert!(carries_credential(query), "{query}");
        }
        for query in [
            "",
            "programme=kz&from=2026-01-01",
            "purpose=court%20order&recipient=district%20court",
            "cursor=abc",
            "q=%zz",
            "q=%",
        ] {
            assert!(!carries_credential(query), "{query}");
        }
    }

    #[test]
    fn tls_is_our_own_or_a_trusted_proxys_word() {
        use actix_web::test::TestRequest;
        let request = |peer: &str, proto: Option<&str>| {
            let mut req = TestRequest::default().peer_addr(peer.parse().unwrap());
            if let Some(proto) = proto {
                req = req.insert_header(("X-Forwarded-Proto", proto));
            }
            req.to_http_request()
        };
        let mut settings = Settings::default();
        // No proxy configured: loopback stands for a same-host proxy,
        // which is not known TLS (links from it are http).
        assert!(over_tls(&request("127.0.0.1:5000", None), &settings));
        assert_eq!(
            transport(&request("127.0.0.1:5000", Some("https")), &settings),
            Transport::Loopback
        );
        assert!(over_tls(&request("[::1]:5000", None), &settings));
        assert!(!over_tls(
            &request("10.0.0.9:5000", Some("https")),
            &settings
        ));
        // A proxy configured: only its header counts, loopback is no proof.
        settings.trusted_proxies = vec!["10.0.0.9".parse().unwrap()];
        assert_eq!(
            transport(&request("10.0.0.9:5000", Some("https")), &settings),
            Transport::Tls
        );
        assert!(over_tls(
            &request("10.0.0.9:5000", Some("https")),
            &settings
        ));
        assert!(over_tls(
            &request("[::ffff:10.0.0.9]:5000", Some("HTTPS")),
            &settings
        ));
        assert!(over_tls(
            &request("10.0.0.9:5000", Some("http, https")),
            &settings
        ));
        assert!(!over_tls(
            &request("10.0.0.9:5000", Some("https, http")),
            &settings
        ));
        assert!(!over_tls(&request("10.0.0.9:5000", None), &settings));
        assert!(!over_tls(&request("127.0.0.1:5000", None), &settings));
        assert!(!over_tls(
            &request("127.0.0.1:5000", Some("https")),
            &settings
        ));
        assert!(!over_tls(
            &request("10.0.0.8:5000", Some("https")),
            &settings
        ));
        // Our own TLS: every connection.
        settings.tls = Some(crate::config::TlsSettings {
            cert: "c.pem".into(),
            key: "k.pem".into(),
        });
        assert!(over_tls(&request("10.0.0.8:5000", None), &settings));
    }

    #[test]
    fn query_errors_keep_names_and_drop_values() {
        assert_eq!(
            without_values("unknown variant `Aigerim`, expected `csv` or `json`"),
            "unknown variant `…`, expected `csv` or `json`"
        );
        assert_eq!(
            without_values("invalid type: string \"Aigerim\", expected a boolean"),
            "invalid type: string \"…\", expected a boolean"
        );
        assert_eq!(
            without_values("missing field `programme`"),
            "missing field `programme`"
        );
        assert_eq!(
            without_values("invalid digit found in string"),
            "invalid digit found in string"
        );
    }
}
