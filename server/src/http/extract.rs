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
use crate::error::{AppError, FieldError};

/// An authenticated caller who has no pending forced password change.
#[derive(Debug, Clone)]
pub struct AuthUser(pub Principal);

/// An authenticated caller, even one who must still change a one-time
/// password: only `/me`, password change and logout take this.
#[derive(Debug, Clone)]
pub struct AnyAuthUser(pub Principal);

fn bearer(req: &HttpRequest) -> Result<String, AppError> {
    let value = req.headers().get(header::AUTHORIZATION).ok_or_else(|| {
        AppError::Unauthorized("an Authorization: Bearer token is required".into())
    })?;
    let value = value
        .to_str()
        .map_err(|_| AppError::Unauthorized("the Authorization header is not valid".into()))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim().to_string())
        }
        _ => Err(AppError::Unauthorized(
            "the Authorization header must be 'Bearer <token>'".into(),
        )),
    }
}

async fn authenticate(req: HttpRequest) -> Result<Principal, AppError> {
    let secret = bearer(&req)?;
    let state = state(&req)?;
    let principal = state
        .db(move |conn| tokens::authenticate(conn, &secret))
        .await?
        .ok_or_else(|| AppError::Unauthorized("the token is unknown, expired or revoked".into()))?;
    // Lets the request log name the actor without ever seeing the token.
    tracing::Span::current().record("user_id", principal.user_id.as_str());
    req.extensions_mut().insert(principal.clone());
    Ok(principal)
}

fn state(req: &HttpRequest) -> Result<web::Data<AppState>, AppError> {
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

/// A JSON request body: `application/json` (415 otherwise), within the
/// configured size (413), and deserialised with the JSON pointer of the first
/// thing wrong (400), unknown fields included.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

fn is_json(req: &HttpRequest) -> bool {
    match req.mime_type() {
        Ok(Some(mime)) => {
            mime.type_() == "application"
                && (mime.subtype() == "json" || mime.suffix().is_some_and(|s| s == "json"))
        }
        _ => false,
    }
}

/// RFC 6901 pointer of a serde path.
fn pointer(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        let part = match segment {
            Segment::Seq { index } => index.to_string(),
            Segment::Map { key } => key.replace('~', "~0").replace('/', "~1"),
            Segment::Enum { variant } => variant.clone(),
            Segment::Unknown => continue,
        };
        out.push('/');
        out.push_str(&part);
    }
    out
}

pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, AppError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let at = pointer(err.path());
        let inner = err.into_inner();
        let message = if inner.is_syntax() || inner.is_eof() {
            format!("malformed JSON: {inner}")
        } else {
            // serde's message names the field and what was expected, but
            // also repeats the position; the pointer says where.
            let text = inner.to_string();
            match text.rfind(" at line ") {
                Some(i) => text[..i].to_string(),
                None => text,
            }
        };
        let detail = if at.is_empty() {
            message.clone()
        } else {
            format!("{at}: {message}")
        };
        AppError::BadRequest {
            detail,
            errors: vec![FieldError::new(at, message)],
        }
    })?;
    de.end().map_err(|e| AppError::BadRequest {
        detail: format!("malformed JSON: {e}"),
        errors: vec![FieldError::new("", format!("malformed JSON: {e}"))],
    })?;
    Ok(value)
}

impl<T: DeserializeOwned + 'static> FromRequest for ApiJson<T> {
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
            let mut body = web::BytesMut::new();
            while let Some(chunk) = payload.next().await {
                let chunk =
                    chunk.map_err(|e| AppError::bad_request(format!("reading the body: {e}")))?;
                if body.len() + chunk.len() > limit {
                    return Err(AppError::PayloadTooLarge { limit });
                }
                body.extend_from_slice(&chunk);
            }
            parse_json(&body).map(ApiJson)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        n: u32,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        items: Vec<Inner>,
    }

    fn error_of(body: &str) -> (String, Vec<FieldError>) {
        match parse_json::<Outer>(body.as_bytes()).unwrap_err() {
            AppError::BadRequest { detail, errors } => (detail, errors),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn wrong_types_are_located_by_pointer() {
        let (_, errors) = error_of(r#"{"name":"a","items":[{"n":1},{"n":"x"}]}"#);
        assert_eq!(errors[0].pointer, "/items/1/n");
        assert!(
            errors[0].message.contains("invalid type"),
            "{}",
            errors[0].message
        );
    }

    #[test]
    fn unknown_fields_and_syntax_errors_are_reported() {
        let (detail, _) = error_of(r#"{"name":"a","items":[],"extra":1}"#);
        assert!(detail.contains("unknown field `extra`"), "{detail}");
        let (detail, _) = error_of(r#"{"name":"a","#);
        assert!(detail.starts_with("malformed JSON"), "{detail}");
        let (detail, _) = error_of(r#"{"name":"a","items":[]} trailing"#);
        assert!(detail.starts_with("malformed JSON"), "{detail}");
    }
}
