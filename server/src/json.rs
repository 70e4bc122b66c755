//! Parsing JSON with the location of the first problem as a JSON pointer,
//! for request bodies and for decrypted submission envelopes alike.

use serde::de::DeserializeOwned;

use crate::error::{AppError, FieldError};

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

/// Turns a located serde error into a 400 naming the pointer.
fn located(err: serde_path_to_error::Error<serde_json::Error>) -> AppError {
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
}

pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, AppError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(located)?;
    de.end().map_err(|e| AppError::BadRequest {
        detail: format!("malformed JSON: {e}"),
        errors: vec![FieldError::new("", format!("malformed JSON: {e}"))],
    })?;
    Ok(value)
}

/// Like `parse_json`, from a value already parsed.
pub fn from_value<T: DeserializeOwned>(value: &serde_json::Value) -> Result<T, AppError> {
    serde_path_to_error::deserialize(value).map_err(located)
}

/// A string read from JSON text, borrowed from it unless it holds escapes:
/// what code that reads many keys or cells uses to avoid an allocation
/// for each.
pub struct BorrowedStr<'de>(pub std::borrow::Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for BorrowedStr<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use std::borrow::Cow;
        struct StrVisitor;
        impl<'de> serde::de::Visitor<'de> for StrVisitor {
            type Value = BorrowedStr<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<BorrowedStr<'de>, E> {
                Ok(BorrowedStr(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<BorrowedStr<'de>, E> {
                Ok(BorrowedStr(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(StrVisitor)
    }
}

/// Stored times are UTC without a zone (`NaiveDateTime`); in a response
/// they carry it: `#[serde(serialize_with = "crate::json::utc")]` writes
/// `2026-06-18T06:00:00Z`, exactly as a `DateTime<Utc>` field would.
pub fn utc<S: serde::Serializer>(at: &chrono::NaiveDateTime, s: S) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&at.and_utc(), s)
}

/// [`utc`] for an optional time (`null` when absent).
pub fn utc_opt<S: serde::Serializer>(
    at: &Option<chrono::NaiveDateTime>,
    s: S,
) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&at.map(|t| t.and_utc()), s)
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
