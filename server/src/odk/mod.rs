//! ODK: casesync's forms as XForms for ODK Collect, Enketo and ODK Web
//! Forms, and their filled instances read back as answers. `nodes` is the
//! one mapping (docs/odk.md), `xform` writes a form from it, `instance`
//! reads a submission with it, `store` keeps each version's XForm.
//! The OpenRosa endpoints, decryption and the phone's case list
//! (`sync::case_list`) are built on top.

pub mod instance;
pub mod nodes;
pub mod store;
pub mod xform;

use serde_json::Value;

/// Whether a checked form (its bundled document) can be put on a phone:
/// every reason it cannot, as `schema location: why`. Uploads of drafts
/// call it, so a form Collect cannot ask is never published.
pub fn check(bundled: &Value) -> Result<(), Vec<String>> {
    let prefix = |p: String| match p.split_once(": /") {
        Some((_, rest)) => format!("/{rest}"),
        None => p,
    };
    let table = nodes::FormTable::build(bundled)
        .map_err(|p| p.into_iter().map(prefix).collect::<Vec<_>>())?;
    xform::generate_from(&table, &[])
        .map(|_| ())
        .map_err(|p| p.into_iter().map(prefix).collect())
}
