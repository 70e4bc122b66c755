//! What a phone needs since its cursor: the feed built from the change
//! log (`changes`), the form versions, keys and cases it names.

pub mod feed;
