//! What a phone needs since its cursor: the feed built from the change
//! log (`changes`), the form versions, keys and cases it names; and the
//! same cases as ODK Collect's case list (`case_list`, ODK Entities).

pub mod case_list;
pub mod feed;
