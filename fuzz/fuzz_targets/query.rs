#![no_main]
//! `scripts/fuzz.sh query SECONDS`; the property is in `fuzz/checks/query.rs`,
//! which `tests/it/fuzz_corpus.rs` replays on every `cargo test`.

#[path = "../checks/query.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
