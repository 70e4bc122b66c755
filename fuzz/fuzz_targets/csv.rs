#![no_main]
//! `scripts/fuzz.sh csv SECONDS`; the property is in `fuzz/checks/csv.rs`,
//! which `tests/it/fuzz_corpus.rs` replays on every `cargo test`.

#[path = "../checks/csv.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
