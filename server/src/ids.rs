//! The one way identifier newtypes are made (and the schema of a value
//! named by a list, [`one_of`]). Each domain module declares
//! the identifiers it owns with [`string_id!`] (`cases::CaseId`,
//! `auth::sites::SiteId`, …), so a handler's path says what it names and a
//! case id cannot be passed where a user id is meant.
//!
//! An id is read from the path as the text it is: an id that names nothing
//! answers 404 in the domain function that looks it up, as before.

/// Declares `pub struct $name(String)`: read and written as a bare string,
/// used as `&str` wherever the domain takes one, described in the OpenAPI
/// document as a string component with the doc comment given.
macro_rules! string_id {
    ($(#[doc = $doc:literal])* $name:ident) => {
        $(#[doc = $doc])*
        #[derive(
            Clone, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize, utoipa::ToSchema,
        )]
        #[serde(transparent)]
        #[schema(value_type = String)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        // Debug as the bare string, as the `String` it replaced printed.
        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Debug::fmt(&self.0, f)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> Self {
                $name(id)
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> Self {
                $name(id.to_string())
            }
        }
    };
}

pub(crate) use string_id;

/// The id of a row the server makes about a case (a child, an action, a
/// conflict, a possible duplicate, a consent, a disclosure…): a UUIDv7,
/// whose leading bits are the time it was made. Rows made one after another
/// then sit side by side in every index keyed by the id, so a new row's
/// entry lands in the index's last leaf; a random v4 id sends each to a
/// random leaf, which the commit then writes whole (16 KiB, encrypted) and
/// which, in a database of a million rows, is rarely in the cache (#19).
/// Ids a phone makes (a case, a form) are the phone's.
pub fn new_row_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The schema of a string that must be one of `values` (a rule's own
/// list, so the OpenAPI document and the check cannot disagree).
pub fn one_of(values: &[&str]) -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(values.iter().copied()))
        .build()
}

/// The schema of a list of strings each one of `values`.
pub fn many_of(values: &[&str]) -> utoipa::openapi::schema::Array {
    utoipa::openapi::schema::Array::new(one_of(values))
}
