#!/usr/bin/env bash
# Export benchmark (#6): ROWS stored KZ referrals (default 1,000,000, about
# 4 GB of SQLite in a temporary directory) streamed to a de-identified CSV.
# Prints rows/s, the resident memory before and at its peak during the
# export, and the process's peak RSS over the whole run (/usr/bin/time).
#
#   scripts/bench-export.sh               # 1,000,000 rows
#   ROWS=200000 scripts/bench-export.sh
#   BENCH_PLAINTEXT=1 scripts/bench-export.sh   # without SQLCipher, to compare
#
# The database is encrypted with SQLCipher as the server's is (a fixed
# bench key) unless BENCH_PLAINTEXT=1.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-1000000}
cargo bench --bench export --no-run --quiet
BIN=$(ls -t target/release/deps/export-* | grep -v '\.d$' | head -1)
echo "exporting $ROWS stored referrals ($BIN)"
ROWS=$ROWS /usr/bin/time -f "whole run: %e s, peak RSS %M KB (including the setup that stores the rows)" "$BIN" --bench
