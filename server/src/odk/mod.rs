//! ODK: casesync's forms as XForms for ODK Collect, Enketo and ODK Web
//! Forms, and their filled instances read back as answers. `nodes` is the
//! one mapping (docs/odk.md), `xform` writes a form from it, `instance`
//! reads a submission with it, `store` keeps each version's XForm.
//! The OpenRosa endpoints, decryption and entities are built on top.

pub mod instance;
pub mod nodes;
pub mod xform;
