//! The manuals' privacy rules that are records of their own: consents
//! (who agreed to what, and who withdrew) and the disclosure log (what left
//! the service, on which legal basis, to whom, why and how).

crate::ids::string_id! {
    /// A subject access request (its rules live with the case until they move here).
    AccessRequestId
}

pub mod consents;
pub mod disclosures;
pub mod from_forms;
