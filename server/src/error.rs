//! One error type for the whole server, rendered as RFC 9457 problem+json.
//!
//! Each variant has a stable snake_case `type` (`urn:casesync:problem:<name>`).
//! Internal causes are logged once and never serialised: they may hold case data.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

pub type AppResult<T> = Result<T, AppError>;

/// One thing wrong with the input, located by a JSON pointer (RFC 6901).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct FieldError {
    /// Where: a JSON pointer into the body (or `/name` of a query parameter).
    pub pointer: String,
    /// What was wrong, in words.
    pub message: String,
}

impl FieldError {
    pub fn new(pointer: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            pointer: pointer.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{detail}")]
    BadRequest {
        detail: String,
        errors: Vec<FieldError>,
    },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("the password must be changed before anything else")]
    PasswordChangeRequired,
    #[error("{0}")]
    NotFound(String),
    /// A refusal that would tell the caller the object exists: answered
    /// exactly as its absence (404, `not_found`, the same detail), and
    /// audited as a refusal (`access_refused`). The text is the one a
    /// missing object of that kind gets.
    #[error("{0}")]
    Hidden(String),
    #[error("this resource does not accept that method")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    #[error("the request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{detail}")]
    Validation {
        detail: String,
        errors: Vec<FieldError>,
    },
    /// A submission's data that does not fit its form: the first problems
    /// (`forms::validate::Report`) and how many more were found.
    #[error("{detail}")]
    InvalidData {
        detail: String,
        errors: Vec<FieldError>,
        unlisted: usize,
    },
    #[error("too many failed attempts; try again in {retry_after_secs} seconds")]
    TooManyRequests { retry_after_secs: u64 },
    #[error("the service is temporarily unavailable")]
    Unavailable(String),
    /// The bounded pool for CPU-heavy work is full or the request ran out
    /// of time (`cpu`): try again after `retry_after_secs`.
    #[error("the server is busy: {detail}; try again in {retry_after_secs} seconds")]
    Busy {
        detail: String,
        retry_after_secs: u64,
    },
    #[error("internal error")]
    Internal(String),
}

/// An RFC 9457 problem, the body of every error.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Problem<'a> {
    /// `urn:casesync:problem:<name>`, stable per kind of problem.
    #[serde(rename = "type")]
    #[schema(value_type = String, example = "urn:casesync:problem:validation")]
    kind: String,
    #[schema(value_type = String)]
    title: &'a str,
    #[schema(minimum = 400, maximum = 599)]
    status: u16,
    detail: String,
    /// Each problem with its pointer (validation and bad requests).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<FieldError>>)]
    errors: Option<&'a [FieldError]>,
    /// Problems found beyond those listed in `errors`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0)]
    unlisted_errors: Option<usize>,
}

impl AppError {
    pub fn bad_request(detail: impl Into<String>) -> Self {
        AppError::BadRequest {
            detail: detail.into(),
            errors: Vec::new(),
        }
    }

    pub fn invalid_field(pointer: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        AppError::Validation {
            detail: format!("{pointer}: {message}"),
            errors: vec![FieldError::new(pointer, message)],
        }
    }

    /// 422 for a submission's data: the problems listed (at most one per
    /// question) and how many more were found (`forms::validate::Report`).
    pub fn invalid_data(errors: Vec<FieldError>, unlisted: usize) -> Self {
        let detail = if unlisted == 0 {
            format!("the form data has {} problem(s)", errors.len())
        } else {
            format!(
                "the form data has {} problems; the first {} are listed, at most one per question",
                errors.len() + unlisted,
                errors.len()
            )
        };
        AppError::InvalidData {
            detail,
            errors,
            unlisted,
        }
    }

    pub fn internal(cause: impl std::fmt::Display) -> Self {
        AppError::Internal(cause.to_string())
    }

    /// Whether this is a refusal answered as "not found".
    pub fn is_hidden_refusal(&self) -> bool {
        matches!(self, AppError::Hidden(_))
    }

    /// A hidden refusal about an object found through another (a consent's
    /// case, an access request's case) told as the absence of the object
    /// that was asked for: `not_found` is what that object's lookup says
    /// when it is missing. Other errors pass unchanged.
    pub fn hidden_as(self, not_found: &str) -> Self {
        match self {
            AppError::Hidden(_) => AppError::Hidden(not_found.to_string()),
            other => other,
        }
    }

    /// The stable machine-readable name of this problem.
    pub fn kind(&self) -> &'static str {
        match self {
            AppError::BadRequest { .. } => "bad_request",
            AppError::Unauthorized(_) => "unauthorized",
            AppError::Forbidden(_) => "forbidden",
            AppError::PasswordChangeRequired => "password_change_required",
            AppError::NotFound(_) | AppError::Hidden(_) => "not_found",
            AppError::MethodNotAllowed => "method_not_allowed",
            AppError::Conflict(_) => "conflict",
            AppError::PayloadTooLarge { .. } => "payload_too_large",
            AppError::UnsupportedMediaType(_) => "unsupported_media_type",
            AppError::Validation { .. } | AppError::InvalidData { .. } => "validation",
            AppError::TooManyRequests { .. } => "too_many_requests",
            AppError::Unavailable(_) => "unavailable",
            AppError::Busy { .. } => "server_busy",
            AppError::Internal(_) => "internal",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            AppError::BadRequest { .. } => "Bad request",
            AppError::Unauthorized(_) => "Authentication required",
            AppError::Forbidden(_) => "Not allowed",
            AppError::PasswordChangeRequired => "Password change required",
            AppError::NotFound(_) | AppError::Hidden(_) => "Not found",
            AppError::MethodNotAllowed => "Method not allowed",
            AppError::Conflict(_) => "Conflict",
            AppError::PayloadTooLarge { .. } => "Request body too large",
            AppError::UnsupportedMediaType(_) => "Unsupported media type",
            AppError::Validation { .. } | AppError::InvalidData { .. } => "Validation failed",
            AppError::TooManyRequests { .. } => "Too many requests",
            AppError::Unavailable(_) => "Service unavailable",
            AppError::Busy { .. } => "Server busy",
            AppError::Internal(_) => "Internal server error",
        }
    }

    fn detail(&self) -> String {
        match self {
            // The causes of these two stay in the log.
            AppError::Unavailable(_) => {
                "the service is temporarily unavailable; retry later".into()
            }
            AppError::Internal(_) => "an internal error occurred; it has been logged".into(),
            other => other.to_string(),
        }
    }
}

impl AppError {
    /// The RFC 9457 body of this problem, for answers that carry several
    /// (a batch) as well as for the error response itself.
    pub fn problem(&self) -> serde_json::Value {
        let errors = match self {
            AppError::BadRequest { errors, .. }
            | AppError::Validation { errors, .. }
            | AppError::InvalidData { errors, .. }
                if !errors.is_empty() =>
            {
                Some(errors.as_slice())
            }
            _ => None,
        };
        serde_json::to_value(Problem {
            kind: format!("urn:casesync:problem:{}", self.kind()),
            title: self.title(),
            status: self.status_code().as_u16(),
            detail: self.detail(),
            errors,
            unlisted_errors: match self {
                AppError::InvalidData { unlisted, .. } => Some(*unlisted),
                _ => None,
            },
        })
        .expect("a problem serialises")
    }
}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        match self {
            AppError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            AppError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) | AppError::PasswordChangeRequired => StatusCode::FORBIDDEN,
            AppError::NotFound(_) | AppError::Hidden(_) => StatusCode::NOT_FOUND,
            AppError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::Validation { .. } | AppError::InvalidData { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            AppError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            AppError::Unavailable(_) | AppError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        match self {
            AppError::Internal(cause) => tracing::error!(%cause, "internal error"),
            AppError::Unavailable(cause) => tracing::warn!(%cause, "service unavailable"),
            _ => {}
        }
        let body = self.problem();
        let mut response = HttpResponse::build(status);
        response.content_type("application/problem+json");
        match self {
            AppError::Unauthorized(_) => {
                response.insert_header((
                    header::WWW_AUTHENTICATE,
                    "Bearer realm=\"casesync\", error=\"invalid_token\"",
                ));
            }
            AppError::TooManyRequests { retry_after_secs }
            | AppError::Busy {
                retry_after_secs, ..
            } => {
                response.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
            }
            // The rest of the body is left unread: close the connection
            // rather than leave a client blocked sending it into a socket
            // nobody reads.
            AppError::PayloadTooLarge { .. } => {
                response.force_close();
            }
            _ => {}
        }
        response.json(body)
    }
}

impl From<diesel::result::Error> for AppError {
    fn from(err: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
        match err {
            Error::NotFound => AppError::NotFound("no such record".into()),
            Error::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
                AppError::Conflict("a record with the same unique value already exists".into())
            }
            Error::DatabaseError(DatabaseErrorKind::ForeignKeyViolation, _) => {
                AppError::bad_request("a referenced record does not exist")
            }
            other => AppError::Internal(format!("database: {other}")),
        }
    }
}

impl From<diesel::r2d2::PoolError> for AppError {
    fn from(err: diesel::r2d2::PoolError) -> Self {
        AppError::Unavailable(format!("database pool: {err}"))
    }
}

impl From<actix_web::error::BlockingError> for AppError {
    fn from(err: actix_web::error::BlockingError) -> Self {
        AppError::Internal(format!("blocking task: {err}"))
    }
}
