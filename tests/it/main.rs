//! The integration tests, as one program: each module was once a test
//! binary of its own, and all share the harness and builders in `common`
//! (one copy of each). Each test starts its own server on loopback with its
//! own database: SQLite in a private temporary directory, or a fresh
//! PostgreSQL database when `CASESYNC_TEST_DATABASE_URL` is set.
//!
//! `cargo test --test it` runs them all; `cargo test --test it cases::`
//! runs one module's.

mod access;
mod access_requests;
mod audit;
mod auth_hardening;
mod backup;
mod binary;
mod browser;
mod browser_case;
mod browser_exports;
mod browser_forms;
mod browser_indicators;
mod browser_people;
mod bt_numbers;
mod cases;
mod collect;
mod collect_qr;
mod common;
mod console;
mod console_audit;
mod console_case;
mod console_exports;
mod console_forms;
mod console_indicators;
mod console_people;
mod docs;
mod errors;
mod exports;
mod exports_tally;
mod forms;
mod fuzz_corpus;
mod hardening_dos;
mod identity;
mod indicators;
mod indicators_projection;
mod interop;
mod keys;
mod kz_rules;
mod layers;
mod migrations;
mod odk_crypto;
mod odk_entities;
mod odk_store;
mod odk_xform;
mod openrosa;
mod operations;
mod privacy;
mod retention;
mod scaleout;
mod seed;
mod snapshots;
mod submissions;
mod sync_fleet;
mod walkthroughs;
