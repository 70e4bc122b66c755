//! The manuals' privacy rules: consents (who agreed to what, and who
//! withdrew), the disclosure log (what left the service, on which legal
//! basis, to whom, why and how), a child's or carer's requests to see their
//! own file (`access_requests`), and how long a closed file is kept
//! (`retention`). Above `cases`, whose files they read; nothing in `cases`
//! calls them.

pub mod access_requests;

crate::ids::string_id! {
    /// A subject access request (`access_requests`).
    AccessRequestId
}

pub mod consents;
pub mod disclosures;
pub mod from_forms;
pub mod retention;
