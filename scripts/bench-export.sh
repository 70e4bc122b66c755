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
#
# DATABASE=postgres (#19 item 8, both modes): the same on PostgreSQL, in a
# new database made for the run on the server DATABASE_URL names (a URL
# whose user may create databases; default: scripts/start-postgres.sh)
# and dropped after it. Over HTTP the seed and the server get it in
# CASESYNC_DATABASE_URL; each figure is labelled with the database, with
# PostgreSQL's durability settings and, beside the server's memory, the
# CPU of the PostgreSQL backends serving the database. With KEEP=DIR the
# database is kept too and its URL written to DIR/database-url, which
# DATA=DIR then reads. DATABASE=both (HTTP=1) seeds and measures SQLite,
# then PostgreSQL, and ends with the figures side by side.
# In-process, the bench's database is a PostgreSQL one (BENCH_DATABASE_URL,
# benches/common) instead of a SQLCipher file.
#
#   HTTP=1 DATABASE=both ROWS=100000 scripts/bench-export.sh
#   DATABASE=postgres ROWS=100000 scripts/bench-export.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-1000000}

DATABASE=${DATABASE:-sqlite}
case "$DATABASE" in
  sqlite) DATABASES=sqlite ;;
  postgres) DATABASES=postgres ;;
  both) DATABASES="sqlite postgres" ;;
  *) echo "DATABASE must be sqlite, postgres or both (not \"$DATABASE\")" >&2; exit 2 ;;
esac
ADMIN_URL=
if [ "$DATABASE" != sqlite ]; then
  ADMIN_URL=${DATABASE_URL:-$(scripts/start-postgres.sh)}
fi
PG_DBS=
drop_databases() {
  for db in $PG_DBS; do
    psql -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  done
}
# "version …, fsync=…, synchronous_commit=…" of the PostgreSQL server of
# database URL $1.
pg_settings() {
  psql -qtA "$1" -c "SELECT 'version ' || current_setting('server_version') || ', fsync=' || current_setting('fsync') || ', synchronous_commit=' || current_setting('synchronous_commit') || ', full_page_writes=' || current_setting('full_page_writes')"
}

if [ "${HTTP:-}" != 1 ]; then
  if [ "$DATABASE" = both ]; then
    echo "DATABASE=both is for HTTP=1; run DATABASE=sqlite and DATABASE=postgres one after the other" >&2
    exit 2
  fi
  cargo bench --bench export --no-run --quiet
  BIN=$(ls -t target/release/deps/export-* | grep -v '\.d$' | head -1)
  if [ "$DATABASE" = postgres ]; then
    trap drop_databases EXIT
    db=casesync_bench_export_$$
    psql -q "$ADMIN_URL" -c "CREATE DATABASE $db" >/dev/null
    PG_DBS=$db
    export BENCH_DATABASE_URL=${ADMIN_URL%/*}/$db
    echo "exporting $ROWS stored referrals ($BIN) from PostgreSQL at ${ADMIN_URL##*@}: $(pg_settings "$ADMIN_URL")"
  else
    echo "exporting $ROWS stored referrals ($BIN) from SQLite"
  fi
  ROWS=$ROWS /usr/bin/time -f "whole run: %e s, peak RSS %M KB (including the setup that stores the rows)" "$BIN" --bench
  exit 0
fi

PORT=${PORT:-18439}
ROOT=$PWD
if [ -n "${DATA:-}${KEEP:-}" ] && [ "$DATABASE" = both ]; then
  echo "KEEP= and DATA= name one data directory: use them with DATABASE=sqlite or DATABASE=postgres" >&2
  exit 2
fi
if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet
  BIN=$ROOT/target/release/casesync
fi
BIN=$(realpath "$BIN")
WORK=$(mktemp -d "${TMPDIR:-/tmp}/casesync-export.XXXXXX")
SERVER=
cleanup() {
  if [ -n "$SERVER" ]; then kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; fi
  drop_databases
  rm -rf "$WORK"
}
trap cleanup EXIT

label() { case "$1" in sqlite) echo SQLite ;; postgres) echo PostgreSQL ;; esac; }
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
PASSWORD="Seeded bench passphrase 71"
login() {
  curl -fs -H 'Content-Type: application/json' \
    -d "{\"username\":\"$1\",\"password\":\"$PASSWORD\"}" "$BASE/api/v1/sessions" | json "['token']"
}
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$SERVER/status"; }
now() { date +%s.%N; }
# Total CPU ticks of the PostgreSQL backends serving database $1 (their
# process title names it): the database's share of an export, which on
# SQLite is inside the server's own process.
pg_ticks() {
  python3 - "$1" <<'PY'
import os, sys
name, total = sys.argv[1], 0
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        title = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
        if title.startswith("postgres: ") and f" {name} " in title:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    except OSError:
        pass
print(total)
PY
}
server_ticks() { awk '{print $14 + $15}' "/proc/$SERVER/stat"; }
# Samples the server's VmRSS every 50 ms into $1 until $1.stop exists.
sample() {
  local peak=0 v
  while [ ! -e "$1.stop" ]; do
    v=$(rss) && [ "$v" -gt "$peak" ] && peak=$v
    sleep 0.05
  done
  echo "$peak" >"$1"
}
report() { # name rows seconds before_kb peak_kb server_ticks db_ticks
  python3 - "$@" "$(getconf CLK_TCK)" "$(label "$CURRENT")" "$PG_DB" <<'PY'
import sys
name, rows, secs, before, peak = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
server, db, hz, label, pg = int(sys.argv[6]), int(sys.argv[7]), int(sys.argv[8]), sys.argv[9], sys.argv[10]
cpu = f"server CPU {server / hz:.1f} s"
if pg:
    cpu += f", PostgreSQL backends {db / hz:.1f} s"
print(f"[{label}] {name}: {rows:,} rows in {secs:.2f} s = {rows / secs:,.0f} rows/s; "
      f"server RSS {before / 1024:.0f} MB before, {peak / 1024:.0f} MB at most during (+{(peak - before) / 1024:.0f} MB); {cpu}")
PY
}
# The CPU counters before a request: "server_ticks db_ticks".
ticks() { echo "$(server_ticks) $( [ -n "$PG_DB" ] && pg_ticks "$PG_DB" || echo 0)"; }
spent() { # "before" -> "server_delta db_delta"
  local now_ticks
  now_ticks=$(ticks)
  python3 -c "a, b = '$1'.split(), '$now_ticks'.split(); print(int(b[0]) - int(a[0]), int(b[1]) - int(a[1]))"
}
# One export: $1 a name, $2 the path; the CSV's lines are counted as they come.
measure_csv() {
  rm -f "$WORK/peak" "$WORK/peak.stop"
  local before start end lines t0 used
  before=$(rss)
  t0=$(ticks)
  sample "$WORK/peak" &
  local sampler=$!
  start=$(now)
  lines=$(curl -fsS -H "Authorization: Bearer $TOKEN" "$BASE$2" | wc -l)
  end=$(now)
  used=$(spent "$t0")
  touch "$WORK/peak.stop"; wait "$sampler"
  # shellcheck disable=SC2086
  report "$1" "$((lines - 1))" "$(python3 -c "print($end - $start)")" "$before" "$(cat "$WORK/peak")" $used | tee -a "$WORK/summary"
}
measure_zip() {
  rm -f "$WORK/peak" "$WORK/peak.stop"
  local before start end rows t0 used
  before=$(rss)
  t0=$(ticks)
  sample "$WORK/peak" &
  local sampler=$!
  start=$(now)
  curl -fsS -o "$WORK/export.zip" -H "Authorization: Bearer $TOKEN" "$BASE$2"
  end=$(now)
  used=$(spent "$t0")
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
  # shellcheck disable=SC2086
  report "$1" "$rows" "$(python3 -c "print($end - $start)")" "$before" "$(cat "$WORK/peak")" $used | tee -a "$WORK/summary"
}

# Seeds (or reuses) a data directory and its database for $CURRENT,
# starts the server on it and asks for each export.
PG_DB=
run_exports() {
unset CASESYNC_DATABASE_URL
PG_DB=
local keep_db=
if [ -n "${DATA:-}" ]; then
  DIR=$(realpath "$DATA")
  echo "reusing the seeded data directory $DIR"
  if [ -f "$DIR/database-url" ]; then
    CASESYNC_DATABASE_URL=$(cat "$DIR/database-url")
    export CASESYNC_DATABASE_URL
    PG_DB=${CASESYNC_DATABASE_URL##*/}
    keep_db=1
    echo "and its PostgreSQL database $PG_DB"
  fi
else
  DIR=${KEEP:-$WORK/$CURRENT-data}
  # Made by the seed itself (0700, as the server wants it).
  DIR=$(realpath -m "$DIR")
  if [ "$CURRENT" = postgres ]; then
    PG_DB=casesync_bench_export_$$
    psql -q "$ADMIN_URL" -c "CREATE DATABASE $PG_DB" >/dev/null
    export CASESYNC_DATABASE_URL=${ADMIN_URL%/*}/$PG_DB
    if [ -n "${KEEP:-}" ]; then
      keep_db=1
      mkdir -p -m 700 "$DIR"
      echo "$CASESYNC_DATABASE_URL" >"$DIR/database-url"
      echo "keeping the PostgreSQL database $PG_DB (its URL in $DIR/database-url)"
    else
      PG_DBS="$PG_DBS $PG_DB"
    fi
  fi
  echo "seeding $ROWS referrals (one case each) into $DIR and $(label "$CURRENT")"
  /usr/bin/time -f "seed: %e s, peak RSS %M KB" \
    "$BIN" --data-dir "$DIR" seed --cases "$ROWS" --forms-per-case 0 --programme kz \
    --fixtures "$ROOT/tests/fixtures/forms" | grep -v '^  '
fi
if [ -n "$PG_DB" ]; then
  echo "PostgreSQL at ${CASESYNC_DATABASE_URL##*@}: $(pg_settings "$CASESYNC_DATABASE_URL"), $(
    psql -qtA "$CASESYNC_DATABASE_URL" -c "SELECT pg_size_pretty(pg_database_size(current_database()))")"
else
  echo "SQLite (SQLCipher) database: $(du -sh "$DIR" | cut -f1)"
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

ADMIN=$(login seed-admin)
KZ_SITES=$(curl -fs -H "Authorization: Bearer $ADMIN" "$BASE/api/v1/sites" |
  python3 -c "import json,sys; print(json.dumps([s['id'] for s in json.load(sys.stdin)['items'] if s['programme']=='kz']))")
# A coordinator of every KZ site, so the export carries every row (the
# seed's coordinators have one site each). Kept if the directory is reused.
curl -s -o /dev/null -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' \
  -d "{\"username\":\"bench-coord-kz\",\"role\":\"coordinator\",\"site_ids\":$KZ_SITES,\"password\":\"$PASSWORD\"}" \
  "$BASE/api/v1/users"
TOKEN=$(login bench-coord-kz)

echo "uptime: $(uptime)"
echo "server $BIN, data $DIR, $(label "$CURRENT"), a coordinator of every KZ site over HTTP"
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
kill "$SERVER"; wait "$SERVER" 2>/dev/null || true
SERVER=
if [ -n "$PG_DB" ] && [ -z "$keep_db" ]; then
  psql -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null
fi
[ -n "${KEEP:-}${DATA:-}" ] || rm -rf "$DIR"
}

ONLY=${ONLY:-}
# A directory kept with its PostgreSQL database is measured on that.
[ -z "${DATA:-}" ] || [ ! -f "$DATA/database-url" ] || DATABASES=postgres
for CURRENT in $DATABASES; do
  echo "== $(label "$CURRENT")"
  run_exports
  echo
done
if [ "$DATABASE" = both ]; then
  echo "== side by side: $ROWS referrals over HTTP"
  cat "$WORK/summary"
  echo
fi
echo "openssl speed rsa2048 (for comparison with the other benchmarks' machine):"
openssl speed -seconds 3 rsa2048 2>/dev/null | tail -n 2 || echo "(openssl not available)"
