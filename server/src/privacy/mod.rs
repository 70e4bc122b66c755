//! The manuals' privacy rules that are records of their own: consents
//! (who agreed to what, and who withdrew) and the disclosure log (what left
//! the service, on which legal basis, to whom, why and how).

pub mod consents;
pub mod disclosures;
pub mod from_forms;
