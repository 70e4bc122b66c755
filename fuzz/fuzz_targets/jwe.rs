#![no_main]
//! `scripts/fuzz.sh jwe SECONDS`; the property is in `fuzz/checks/jwe.rs`,
//! which `tests/it/fuzz_corpus.rs` replays on every `cargo test`.

#[path = "../checks/jwe.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
