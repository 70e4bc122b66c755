#!/usr/bin/env bash
# Export benchmark (#6, #19 item 3).
#
# In-process (the default): ROWS stored KZ referrals (default 1,000,000,
# about 4 GB of SQLite in a temporary directory) streamed to a
# de-identified CSV. Prints rows/s, the resident memory before and at its
# peak during the export, and the process's peak RSS over the whole run
# (/usr/bin/time).
#
#   scripts/bench-export.sh               # 1,000,000 rows
#   ROWS=200000 scripts/bench-export.sh
#   BENCH_PLAINTEXT=1 scripts/bench-export.sh   # without SQLCipher, to compare
#
# The database is encrypted with SQLCipher as the server's is (a fixed
# bench key) unless BENCH_PLAINTEXT=1.
#
# HTTP=1: the real path (#19 item 3). A release server (`casesync serve`)
# on a data directory holding ROWS referrals (default 1,000,000), each
# opening a case of its own, filled by `casesync seed --forms-per-case 0
# --programme kz` (ingest's own code, without HTTP and RSA). A coordinator
# of all three KZ sites (made over HTTP by `seed-admin`) then asks, one at
# a time, with curl:
#   GET /api/v1/exports/forms/kz.referral.csv        (rows: lines less the header)
#   GET /api/v1/exports/cases.csv?programme=kz       (rows: lines less the header)
#   GET /api/v1/exports/forms/kz.referral.zip        (rows: every CSV's lines less
#                                                     its header; the ZIP goes to a
#                                                     temporary file, counted after
#                                                     the clock stops)
# The CSVs are counted streaming (`wc -l`) and never stored. For each it
# prints rows, seconds, rows/s and the server's resident memory before and
# at its peak during the request (VmRSS of /proc/PID/status every 50 ms),
# then `uptime` and `openssl speed rsa2048` as the other scripts do.
#
#   HTTP=1 scripts/bench-export.sh                 # 1,000,000 referrals
#   HTTP=1 ROWS=200000 scripts/bench-export.sh
#   HTTP=1 KEEP=/dir ...   # seed into /dir and keep it
#   HTTP=1 DATA=/dir ...   # a data directory seeded earlier (no seeding)
#   HTTP=1 BIN=path/to/casesync ...   # a release binary already built
#   HTTP=1 ONLY=zip ...    # one export: csv, cases or zip
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-1000000}

if [ "${HTTP:-}" != 1 ]; then
  cargo bench --bench export --no-run --quiet
  BIN=$(ls -t target/release/deps/export-* | grep -v '\.d$' | head -1)
  echo "exporting $ROWS stored referrals ($BIN)"
  ROWS=$ROWS /usr/bin/time -f "whole run: %e s, peak RSS %M KB (including the setup that stores the rows)" "$BIN" --bench
  exit 0
fi

PORT=${PORT:-18439}
ROOT=$PWD
if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet
  BIN=$ROOT/target/release/casesync
fi
BIN=$(realpath "$BIN")
WORK=$(mktemp -d "${TMPDIR:-/tmp}/casesync-export.XXXXXX")
SERVER=
cleanup() {
  if [ -n "$SERVER" ]; then kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ -n "${DATA:-}" ]; then
  DIR=$(realpath "$DATA")
  echo "reusing the seeded data directory $DIR"
else
  DIR=${KEEP:-$WORK/data}
  # Made by the seed itself (0700, as the server wants it).
  DIR=$(realpath -m "$DIR")
  echo "seeding $ROWS referrals (one case each) into $DIR"
  /usr/bin/time -f "seed: %e s, peak RSS %M KB" \
    "$BIN" --data-dir "$DIR" seed --cases "$ROWS" --forms-per-case 0 --programme kz \
    --fixtures "$ROOT/tests/fixtures/forms" | grep -v '^  '
fi

cd "$WORK"
CASESYNC_BIND=127.0.0.1:$PORT CASESYNC_LOG_FORMAT=json RUST_LOG=warn \
  "$BIN" --data-dir "$DIR" serve 2>server.log &
SERVER=$!
BASE=http://127.0.0.1:$PORT
# A large database may take a while to open (migrations, first reads).
for _ in $(seq 1 36000); do
  curl -fs "$BASE/readyz" >/dev/null 2>&1 && break
  kill -0 "$SERVER" 2>/dev/null || { cat server.log; exit 1; }
  sleep 0.1
done

json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
PASSWORD="Seeded bench passphrase 71"
login() {
  curl -fs -H 'Content-Type: application/json' \
    -d "{\"username\":\"$1\",\"password\":\"$PASSWORD\"}" "$BASE/api/v1/sessions" | json "['token']"
}
ADMIN=$(login seed-admin)
KZ_SITES=$(curl -fs -H "Authorization: Bearer $ADMIN" "$BASE/api/v1/sites" |
  python3 -c "import json,sys; print(json.dumps([s['id'] for s in json.load(sys.stdin)['items'] if s['programme']=='kz']))")
# A coordinator of every KZ site, so the export carries every row (the
# seed's coordinators have one site each). Kept if the directory is reused.
curl -s -o /dev/null -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' \
  -d "{\"username\":\"bench-coord-kz\",\"role\":\"coordinator\",\"site_ids\":$KZ_SITES,\"password\":\"$PASSWORD\"}" \
  "$BASE/api/v1/users"
TOKEN=$(login bench-coord-kz)

rss() { awk '/^VmRSS:/ {print $2}' "/proc/$SERVER/status"; }
now() { date +%s.%N; }
# Samples the server's VmRSS every 50 ms into $1 until $1.stop exists.
sample() {
  local peak=0 v
  while [ ! -e "$1.stop" ]; do
    v=$(rss) && [ "$v" -gt "$peak" ] && peak=$v
    sleep 0.05
  done
  echo "$peak" >"$1"
}
report() { # name rows seconds before_kb peak_kb
  python3 - "$@" <<'PY'
import sys
name, rows, secs, before, peak = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
print(f"{name}: {rows:,} rows in {secs:.2f} s = {rows / secs:,.0f} rows/s; "
      f"server RSS {before / 1024:.0f} MB before, {peak / 1024:.0f} MB at most during (+{(peak - before) / 1024:.0f} MB)")
PY
}
# One export: $1 a name, $2 the path; the CSV's lines are counted as they come.
measure_csv() {
  rm -f "$WORK/peak" "$WORK/peak.stop"
  local before start end lines
  before=$(rss)
  sample "$WORK/peak" &
  local sampler=$!
  start=$(now)
  lines=$(curl -fsS -H "Authorization: Bearer $TOKEN" "$BASE$2" | wc -l)
  end=$(now)
  touch "$WORK/peak.stop"; wait "$sampler"
  report "$1" "$((lines - 1))" "$(python3 -c "print($end - $start)")" "$before" "$(cat "$WORK/peak")"
}
measure_zip() {
  rm -f "$WORK/peak" "$WORK/peak.stop"
  local before start end rows
  before=$(rss)
  sample "$WORK/peak" &
  local sampler=$!
  start=$(now)
  curl -fsS -o "$WORK/export.zip" -H "Authorization: Bearer $TOKEN" "$BASE$2"
  end=$(now)
  touch "$WORK/peak.stop"; wait "$sampler"
  # Counted after the clock stopped: each entry's lines less its header.
  rows=$(python3 - "$WORK/export.zip" <<'PY'
import sys, zipfile
total = 0
with zipfile.ZipFile(sys.argv[1]) as z:
    for info in z.infolist():
        with z.open(info) as f:
            n = sum(1 for _ in f) - 1
        print(f"  {info.filename}: {n:,} rows, {info.file_size / 1e6:.0f} MB of CSV", file=sys.stderr)
        total += n
print(total)
PY
)
  rm -f "$WORK/export.zip"
  report "$1" "$rows" "$(python3 -c "print($end - $start)")" "$before" "$(cat "$WORK/peak")"
}

echo "uptime: $(uptime)"
echo "server $BIN, data $DIR, a coordinator of every KZ site over HTTP"
ONLY=${ONLY:-}
if [ -z "$ONLY" ] || [ "$ONLY" = csv ]; then
  measure_csv "kz.referral.csv" "/api/v1/exports/forms/kz.referral.csv"
fi
if [ -z "$ONLY" ] || [ "$ONLY" = cases ]; then
  measure_csv "cases.csv?programme=kz" "/api/v1/exports/cases.csv?programme=kz"
fi
if [ -z "$ONLY" ] || [ "$ONLY" = zip ]; then
  measure_zip "kz.referral.zip" "/api/v1/exports/forms/kz.referral.zip"
fi
echo "uptime: $(uptime)"
echo
echo "openssl speed rsa2048 (for comparison with the other benchmarks' machine):"
openssl speed -seconds 3 rsa2048 2>/dev/null | tail -n 2 || echo "(openssl not available)"
