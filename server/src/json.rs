//! Parsing JSON with the location of the first problem as a JSON pointer,
//! for request bodies and for decrypted submission envelopes alike, and the
//! one check of text that must not be ambiguous (identifiers and names).
//!
//! Ambiguous input is refused before anything reads it: an object naming a
//! key twice (serde would keep the last, another parser the first) and a
//! NUL anywhere (PostgreSQL cannot store it; C tools cut the text there).

use std::borrow::Cow;
use std::collections::HashSet;

use serde::de::{DeserializeOwned, DeserializeSeed, Error as _, MapAccess, SeqAccess, Visitor};

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
    refuse_ambiguity(body)?;
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(located)?;
    de.end().map_err(|e| AppError::BadRequest {
        detail: format!("malformed JSON: {e}"),
        errors: vec![FieldError::new("", format!("malformed JSON: {e}"))],
    })?;
    Ok(value)
}

/// Characters that make text say something other than what it shows: NUL,
/// and the Unicode bidirectional controls (embeddings, overrides, isolates,
/// marks) that reorder what a reviewer reads ("Trojan Source").
pub fn is_unsafe_char(c: char) -> bool {
    matches!(c,
        '\0'
        | '\u{202A}'..='\u{202E}'
        | '\u{2066}'..='\u{2069}'
        | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

/// The one check of identifiers, usernames, site codes and people's names:
/// `None` if `text` holds no NUL or bidirectional control, else the problem
/// at `pointer`, naming the character by its code point.
pub fn unsafe_text(pointer: &str, text: &str) -> Option<FieldError> {
    text.chars().find(|&c| is_unsafe_char(c)).map(|c| {
        FieldError::new(
            pointer,
            format!(
                "contains the invisible control character U+{:04X}; retype it without",
                c as u32
            ),
        )
    })
}

/// Like [`unsafe_text`] for several fields at once, as a 422.
pub fn refuse_unsafe_text<'a>(
    fields: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<(), AppError> {
    let errors: Vec<FieldError> = fields
        .into_iter()
        .filter_map(|(pointer, text)| unsafe_text(pointer, text))
        .collect();
    match errors.first() {
        None => Ok(()),
        Some(first) => Err(AppError::Validation {
            detail: format!("{}: {}", first.pointer, first.message),
            errors,
        }),
    }
}

/// One step of the path to where the walk is.
enum Step<'de> {
    Key(Cow<'de, str>),
    Index(usize),
}

/// What the walk carries: where it is, and what it found wrong.
#[derive(Default)]
struct Walk<'de> {
    path: Vec<Step<'de>>,
    found: Option<FieldError>,
}

impl Walk<'_> {
    fn pointer_to(&self, last: Option<&str>) -> String {
        let mut out = String::new();
        let escaped = |s: &str| s.replace('~', "~0").replace('/', "~1");
        for step in &self.path {
            out.push('/');
            match step {
                Step::Key(k) => out.push_str(&escaped(k)),
                Step::Index(i) => out.push_str(&i.to_string()),
            }
        }
        if let Some(last) = last {
            out.push('/');
            out.push_str(&escaped(last));
        }
        out
    }
}

/// The keys of one object so far: a short list while the object is small
/// (most are), a hash set past that, so any object is checked in time
/// linear in its size.
#[derive(Default)]
struct Keys<'de> {
    few: Vec<Cow<'de, str>>,
    many: Option<HashSet<Cow<'de, str>>>,
}

impl<'de> Keys<'de> {
    const FEW: usize = 16;

    /// Adds `key`; false if it was there already.
    fn insert(&mut self, key: Cow<'de, str>) -> bool {
        if let Some(many) = &mut self.many {
            return many.insert(key);
        }
        if self.few.contains(&key) {
            return false;
        }
        self.few.push(key);
        if self.few.len() > Self::FEW {
            self.many = Some(self.few.drain(..).collect());
        }
        true
    }
}

/// Walks one value, checking as it goes; keeps nothing but the key sets of
/// the objects it is inside, so it runs in one pass over the text.
struct Walker<'w, 'de>(&'w mut Walk<'de>);

impl<'de> DeserializeSeed<'de> for Walker<'_, 'de> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walker<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        if v.contains('\0') {
            self.0.found = Some(FieldError::new(
                self.0.pointer_to(None),
                "contains a NUL character, which no text may hold",
            ));
            return Err(E::custom("NUL"));
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        self.0.path.push(Step::Index(index));
        while seq.next_element_seed(Walker(self.0))?.is_some() {
            index += 1;
            if let Some(last) = self.0.path.last_mut() {
                *last = Step::Index(index);
            }
        }
        self.0.path.pop();
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = Keys::default();
        while let Some(BorrowedStr(key)) = map.next_key()? {
            if key.contains('\0') {
                self.0.found = Some(FieldError::new(
                    self.0.pointer_to(None),
                    "a key contains a NUL character, which no text may hold",
                ));
                return Err(A::Error::custom("NUL"));
            }
            if !seen.insert(key.clone()) {
                self.0.found = Some(FieldError::new(
                    self.0.pointer_to(Some(&key)),
                    "this key appears more than once in its object; send it once",
                ));
                return Err(A::Error::custom("duplicate key"));
            }
            self.0.path.push(Step::Key(key));
            map.next_value_seed(Walker(self.0))?;
            self.0.path.pop();
        }
        Ok(())
    }
}

/// Refuses (400) JSON text with a key twice in one object or a NUL in any
/// string, naming where. Malformed text passes here: the typed parse that
/// follows says what is wrong with it, and where.
fn refuse_ambiguity(body: &[u8]) -> Result<(), AppError> {
    let mut walk = Walk::default();
    let mut de = serde_json::Deserializer::from_slice(body);
    if Walker(&mut walk).deserialize(&mut de).is_ok() {
        return Ok(());
    }
    match walk.found {
        Some(error) => Err(AppError::BadRequest {
            detail: format!("{}: {}", error.pointer, error.message),
            errors: vec![error],
        }),
        None => Ok(()),
    }
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

    #[test]
    fn a_key_twice_is_refused_at_any_depth_with_its_pointer() {
        let (_, errors) = error_of(r#"{"name":"a","name":"b","items":[]}"#);
        assert_eq!(errors[0].pointer, "/name");
        let (detail, errors) = error_of(r#"{"name":"a","items":[{"n":1},{"n":2,"n":3}]}"#);
        assert_eq!(errors[0].pointer, "/items/1/n");
        assert!(detail.contains("more than once"), "{detail}");
        // The same key spelled with an escape is the same key.
        let (_, errors) = error_of(r#"{"name":"a","n\u0061me":"b","items":[]}"#);
        assert_eq!(errors[0].pointer, "/name");
        // Into a bare value too, as envelopes are read.
        let err = parse_json::<serde_json::Value>(br#"{"data":{"child":{"a/b":1,"a/b":2}}}"#)
            .unwrap_err();
        assert!(
            matches!(&err, AppError::BadRequest { errors, .. } if errors[0].pointer == "/data/child/a~1b"),
            "{err:?}"
        );
        // The same key in sibling objects is no duplicate.
        parse_json::<Outer>(br#"{"name":"a","items":[{"n":1},{"n":2}]}"#).unwrap();
    }

    #[test]
    fn nul_is_refused_anywhere() {
        let (_, errors) = error_of(r#"{"name":"a\u0000b","items":[]}"#);
        assert_eq!(errors[0].pointer, "/name");
        let err = parse_json::<serde_json::Value>(br#"[1,{"x":["ok","\u0000"]}]"#).unwrap_err();
        assert!(
            matches!(&err, AppError::BadRequest { errors, .. } if errors[0].pointer == "/1/x/1"),
            "{err:?}"
        );
    }

    #[test]
    fn bidirectional_controls_are_named_by_code_point() {
        assert!(unsafe_text("/n", "Aigerim Nurlanovna").is_none());
        assert!(unsafe_text("/n", "Айгерим ٴ Ахмед").is_none());
        for c in ['\u{202E}', '\u{2066}', '\u{200F}', '\u{061C}', '\0'] {
            let found = unsafe_text("/n", &format!("ab{c}cd")).unwrap();
            assert!(
                found.message.contains(&format!("U+{:04X}", c as u32)),
                "{}",
                found.message
            );
        }
    }

    #[test]
    fn deep_and_wide_input_is_walked_in_one_pass() {
        // 200k keys in one object, and nesting to serde_json's limit.
        let mut wide = String::from("{");
        for i in 0..200_000 {
            wide.push_str(&format!("\"k{i}\":{i},"));
        }
        wide.push_str("\"k0\":0}");
        let err = parse_json::<serde_json::Value>(wide.as_bytes()).unwrap_err();
        assert!(
            matches!(&err, AppError::BadRequest { errors, .. } if errors[0].pointer == "/k0"),
            "{err:?}"
        );
        let deep = format!("{}1{}", "[".repeat(120), "]".repeat(120));
        parse_json::<serde_json::Value>(deep.as_bytes()).unwrap();
    }
}
