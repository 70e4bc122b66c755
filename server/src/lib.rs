//! casesync: a sync server for child-protection case management in the field.
//!
//! Phones submit encrypted forms; the server validates them, reconciles them
//! into each child's case timeline, watches the manuals' deadlines and gives
//! coordinators exports and indicators. See `docs/` and the README.

pub mod app;
pub mod audit;
pub mod auth;
pub mod backup;
pub mod cases;
pub mod changes;
pub mod cli;
pub mod client;

pub mod config;
pub mod cpu;
pub mod crypto;
pub mod db;
pub mod error;
pub mod exports;
pub mod forms;
pub mod http;
pub mod ids;
pub mod indicators;
pub mod ingest;
pub mod json;
pub mod metrics;
pub mod odk;
pub mod privacy;
pub mod programmes;
pub mod server;
pub mod sheet;
pub mod submissions;
pub mod sync;
pub mod telemetry;
pub mod time;
