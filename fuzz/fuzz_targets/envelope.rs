#![no_main]
//! `scripts/fuzz.sh envelope SECONDS`; the property is in `fuzz/checks/envelope.rs`,
//! which `tests/it/fuzz_corpus.rs` replays on every `cargo test`.

#[path = "../checks/envelope.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
