#![no_main]
//! `scripts/fuzz.sh odk SECONDS`; the property is in `fuzz/checks/odk.rs`,
//! which `tests/it/fuzz_corpus.rs` replays on every `cargo test`.

#[path = "../checks/odk.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
