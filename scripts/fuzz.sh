#!/usr/bin/env bash
# Runs one cargo-fuzz target for a while, growing its corpus under
# fuzz/corpus/TARGET (kept in git and replayed by `cargo test` through
# tests/it/fuzz_corpus.rs). Crashes land in fuzz/artifacts/TARGET/.
#
#   scripts/fuzz.sh jwe|envelope|query|csv|odk SECONDS
#
# Needs a nightly toolchain (`rustup toolchain list`); installs cargo-fuzz
# from crates.io when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

target=${1:?usage: scripts/fuzz.sh TARGET SECONDS (targets: jwe envelope query csv odk)}
seconds=${2:?usage: scripts/fuzz.sh TARGET SECONDS}

if ! rustup toolchain list | grep -q '^nightly'; then
  echo "fuzz: no nightly toolchain (rustup toolchain list); AFL++ from Debian's packages is the other way" >&2
  exit 2
fi
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz

mkdir -p "fuzz/corpus/$target"
started=$(date +%s)
# -max_len: a submission is at most 5 MiB, but the parsers' paths are all
# reached far below that; long inputs only slow the search.
cargo +nightly fuzz run "$target" "fuzz/corpus/$target" -- \
  -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 "${@:3}"
echo "fuzz: $target ran $(( $(date +%s) - started )) s; corpus: $(ls "fuzz/corpus/$target" | wc -l) inputs"
