//! The audit log: who did what to which object, when, from where. Rows are
//! only ever inserted. Written in the same transaction as the change they
//! describe, so a change without its audit row cannot exist.
//!
//! Each row is chained to the one before it: `hash` is SHA-256 over the
//! row's content and the previous row's hash, `seq` its position, and
//! `audit_head` the last position and hash. An edited, deleted or inserted
//! row, or rows deleted at the tail, break the chain and `verify` says where.
//!
//! Keyed chain: from the position `keyed_from` on, `hash` is an HMAC-SHA256
//! under the chain's key (`data/audit.key`, sealed under the KEK, never in
//! the database), so someone who can edit the database cannot re-hash the
//! rows after one they deleted or changed. Rows before that point (written
//! by older versions) stay plain SHA-256 and verify as before. Cutting rows
//! off the end and moving the head back leaves a valid shorter chain: an
//! anchor (`casesync audit anchor`, kept elsewhere) finds that.

mod chain;
mod csv;
mod query;
mod verify;

pub use chain::{
    key_chain, record, record_batch_refusals, record_refusal, refused_items, seal_unsealed,
    AuditRow, ChainKey, Event, Origin, GENESIS,
};
pub use csv::write_csv;
pub use query::{parse_bound, query, recent, AuditFilter, AuditPage, AuditQuery, Before};
pub use verify::{
    head, verify, verify_here, Anchor, ChainCheck, CheckDone, CheckState, Problem, Started,
    Verification,
};
