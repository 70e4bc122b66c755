//! Replays every input kept under `fuzz/corpus/TARGET/` through the same
//! property the fuzz target checks (`fuzz/checks/TARGET.rs`), so what a
//! fuzz run found stays found on every `cargo test`, without a nightly
//! toolchain. `scripts/fuzz.sh TARGET SECONDS` grows the corpus.

use std::path::Path;

#[path = "../../fuzz/checks/csv.rs"]
mod csv_check;
#[path = "../../fuzz/checks/envelope.rs"]
mod envelope_check;
#[path = "../../fuzz/checks/jwe.rs"]
mod jwe_check;
#[path = "../../fuzz/checks/odk.rs"]
mod odk_check;
#[path = "../../fuzz/checks/query.rs"]
mod query_check;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut inputs = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(outcome.is_ok(), "{} fails its check", path.display());
        inputs += 1;
    }
    assert!(inputs > 0, "{} holds no inputs", dir.display());
}

#[test]
fn the_jwe_corpus_holds() {
    replay("jwe", jwe_check::check);
}

#[test]
fn the_envelope_corpus_holds() {
    replay("envelope", envelope_check::check);
}

#[test]
fn the_query_corpus_holds() {
    replay("query", query_check::check);
}

#[test]
fn the_csv_corpus_holds() {
    replay("csv", csv_check::check);
}

#[test]
fn the_odk_corpus_holds() {
    replay("odk", odk_check::check);
}
