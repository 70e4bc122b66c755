#!/usr/bin/env bash
# Ingest benchmark (#4): N distinct encrypted KZ referrals (default 20,000)
# pushed by C concurrent clients (default 32) over loopback into a fresh
# server on embedded SQLite (synchronous=FULL, group commits). Each client
# sends one submission per request, like a phone without the batch
# endpoint. Prints accepted/s and request latency p50/p99 (from
# `casesync collect push --stats`), and `openssl speed rsa2048` for the
# ceiling set by one RSA-2048 private operation per submission.
#
# MODE=openrosa then sends the same N referrals as ODK Collect does
# (`casesync collect odk-push`: the instance XML encrypted with Collect's
# scheme, multipart to /odk/kz/submission) with the same concurrency into
# a second server on a new empty database, so both doors are measured at
# the same size (the cost of a commit grows with the data already stored,
# #19), and prints both rates and their ratio, then the latency of ODK
# Collect's formList (every form of the programme) asked 2,000 times by
# one client and by C clients.
#
# STORED=S (#19 item 1) runs the same push twice in one invocation: first
# into an empty database, then into one pre-filled by `casesync seed` with
# S submissions of realistic cases (S/10 distinct children at the six
# default sites, about 10 forms each across the programme's forms, every
# one stored by ingest's own code) and prints both rates side by side with
# the stored count. STORED=0 (the default) is the single run on an empty
# database. SEEDED=<dir> starts from a copy of a data directory seeded
# earlier (`casesync --data-dir DIR seed --cases S/10 --forms-per-case 10`).
#
#   scripts/bench-ingest.sh                 # 20000 submissions, 32 clients
#   N=5000 C=8 scripts/bench-ingest.sh
#   MODE=openrosa N=5000 C=8 scripts/bench-ingest.sh
#   STORED=100000 N=5000 scripts/bench-ingest.sh   # empty, then 100,000 stored
#   BIN=target/debug/casesync ...           # a binary already built
#
# DATABASE=postgres (#19 item 8) runs the same on PostgreSQL: the same
# server binary pointed (CASESYNC_DATABASE_URL) at a new database made for
# each run on the server DATABASE_URL names (a URL whose user may create
# databases; default: scripts/start-postgres.sh) and dropped after it; the
# seed of STORED= goes into such a database too. It prints PostgreSQL's
# durability settings (fsync, synchronous_commit: the test cluster of
# start-postgres.sh has them off, a deployment has them on) and, beside
# the server's CPU, the CPU of the PostgreSQL backends serving that
# database (SQLite's work is inside the server's own CPU). DATABASE=both
# runs everything on SQLite, then on PostgreSQL, and ends with the figures
# side by side. SEEDED= is for SQLite only.
#
#   DATABASE=both N=5000 scripts/bench-ingest.sh
#   DATABASE=postgres DATABASE_URL=postgres://u:p@127.0.0.1:5434/x STORED=100000 scripts/bench-ingest.sh
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${MODE:-jwe}
N=${N:-20000}
C=${C:-32}
PORT=${PORT:-18437}
STORED=${STORED:-0}
DATABASE=${DATABASE:-sqlite}
ROOT=$PWD
case "$DATABASE" in
  sqlite) DATABASES=sqlite ;;
  postgres) DATABASES=postgres ;;
  both) DATABASES="sqlite postgres" ;;
  *) echo "DATABASE must be sqlite, postgres or both (not \"$DATABASE\")" >&2; exit 2 ;;
esac
if [ -n "${SEEDED:-}" ] && [ "$DATABASE" != sqlite ]; then
  echo "SEEDED= copies a SQLite data directory; leave it out with DATABASE=$DATABASE (the seed then runs)" >&2
  exit 2
fi

if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet
  BIN=$ROOT/target/release/casesync
fi
BIN=$(realpath "$BIN")
ADMIN_URL=
if [ "$DATABASE" != sqlite ]; then
  ADMIN_URL=${DATABASE_URL:-$(scripts/start-postgres.sh)}
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/casesync-bench.XXXXXX")
SERVER=
PG_DBS=
cleanup() {
  if [ -n "$SERVER" ]; then kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; fi
  for db in $PG_DBS; do
    psql -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  done
  rm -rf "$WORK"
  case "${PHONE_ROOT:-}" in /dev/shm/*) rm -rf "$PHONE_ROOT" ;; esac
}
trap cleanup EXIT
cd "$WORK"

# The referral fixture, signed on paper (no signature image to upload).
python3 - "$ROOT/tests/fixtures/forms/kz.referral/valid.json" > referral.json <<'PY'
import json, sys
data = json.load(open(sys.argv[1]))
data["signoff"]["referrer_signature"].pop("signature", None)
print(json.dumps(data))
PY

label() { case "$1" in sqlite) echo SQLite ;; postgres) echo PostgreSQL ;; esac; }

# The database of the next run on $1 (sqlite or postgres), named after
# $2: SQLite's lives in the data directory; on PostgreSQL a new database
# (dropped after the run, or on exit), whose URL the server and the seed
# get in CASESYNC_DATABASE_URL.
PG_DB=
new_store() {
  PG_DB=
  unset CASESYNC_DATABASE_URL
  if [ "$1" = postgres ]; then
    PG_DB=casesync_bench_$$_$2
    psql -q "$ADMIN_URL" -c "CREATE DATABASE $PG_DB" >/dev/null
    PG_DBS="$PG_DBS $PG_DB"
    export CASESYNC_DATABASE_URL=${ADMIN_URL%/*}/$PG_DB
  fi
}
drop_store() {
  [ -n "$PG_DB" ] || return 0
  psql -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null
}

cpu() { awk '{print $14 " " $15}' "/proc/$1/stat"; }  # user, system ticks
# "pid user system" (ticks) of each PostgreSQL backend serving database $1
# (its process title names the database): the database's share of the
# work, which on SQLite is inside the server's own CPU.
pg_cpu() {
  python3 - "$1" <<'PY'
import os, sys
name = sys.argv[1]
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        title = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
        if not title.startswith("postgres: ") or f" {name} " not in title:
            continue
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        print(pid, fields[11], fields[12])
    except OSError:
        pass
PY
}
# Prints the server's (and PostgreSQL's) CPU per submission between two
# samples; $1 the server's before/after, $2 the backends' files (or "").
cpu_report() {
  python3 - "$1" "$2" "$3" "$4" "$(getconf CLK_TCK)" "$N" "$5" <<'PY'
import sys
s0, s1, pg0, pg1, hz, n, what = sys.argv[1:8]
hz, n = int(hz), int(n)
(u0, k0), (u1, k1) = (map(int, a.split()) for a in (s0, s1))
user, system = (u1 - u0) / hz, (k1 - k0) / hz
print(f"server: {user:.1f} s user + {system:.1f} s system CPU, "
      f"{(user + system) * 1e3 / n:.2f} ms CPU per {what}")
if pg1:
    def load(path):
        out = {}
        for line in open(path):
            pid, u, k = line.split()
            out[pid] = (int(u), int(k))
        return out
    before, after = load(pg0), load(pg1)
    u = sum(a[0] - before.get(p, (0, 0))[0] for p, a in after.items()) / hz
    k = sum(a[1] - before.get(p, (0, 0))[1] for p, a in after.items()) / hz
    print(f"PostgreSQL backends of this database ({len(after)}): {u:.1f} s user + {k:.1f} s system CPU, "
          f"{(u + k) * 1e3 / n:.2f} ms CPU per {what}; "
          f"server and backends {(user + system + u + k) * 1e3 / n:.2f} ms")
PY
}

# One run: a server on data directory $1 (made by `serve` when empty) and
# the current store's database, the bench worker, N referrals pushed by C
# clients through door $2 (`jwe`, the default, or `openrosa`). Leaves the
# rate in $RATE and the push's and CPU lines in $LINES, stops the server.
RATE=
LINES=
run_bench() {
local DATA_DIR=$1 DOOR=${2:-jwe}
CASESYNC_BIND=127.0.0.1:$PORT CASESYNC_LOG_FORMAT=json RUST_LOG=warn "$BIN" --data-dir "$DATA_DIR" serve 2>>server.log &
SERVER=$!
BASE=http://127.0.0.1:$PORT
for _ in $(seq 1 600); do
  curl -fs "$BASE/readyz" >/dev/null 2>&1 && break
  kill -0 "$SERVER" 2>/dev/null || { echo "the server stopped:"; tail -n 20 server.log; exit 1; }
  sleep 0.1
done

json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
INITIAL=$(cat "$DATA_DIR/initial-admin-password")
TOKEN=$(curl -fs -H 'Content-Type: application/json' \
  -d "{\"username\":\"admin\",\"password\":\"$INITIAL\"}" "$BASE/api/v1/sessions" | json "['token']")
# The change ends the one-time session; its answer carries a fresh one.
TOKEN=$(curl -fs -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
  -d "{\"current_password\":\"$INITIAL\",\"new_password\":\"bench-admin-password\"}" "$BASE/api/v1/me/password" | json "['token']")
SITE=$(curl -fs -H "Authorization: Bearer $TOKEN" "$BASE/api/v1/sites" |
  python3 -c "import json,sys; print([s['id'] for s in json.load(sys.stdin)['items'] if s['code']=='KZ-CAM-ALA'][0])")
curl -fs -o /dev/null -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
  -d "{\"username\":\"bench\",\"role\":\"field_worker\",\"site_ids\":[\"$SITE\"],\"password\":\"bench-worker-password\"}" \
  "$BASE/api/v1/users"

# The collector stands in for 32 phones: its own durable bookkeeping (an
# fsync per acknowledgement) is not what is measured, so its directory goes
# to memory when the machine has /dev/shm. The server's data stays on disk.
case "${PHONE_ROOT:-}" in /dev/shm/*) rm -rf "$PHONE_ROOT" ;; esac
PHONE_ROOT=$(mktemp -d "$WORK/phone.XXXXXX")
[ -d /dev/shm ] && [ -w /dev/shm ] && PHONE_ROOT=$(mktemp -d /dev/shm/casesync-phone.XXXXXX)
export CASESYNC_COLLECT_DIR=$PHONE_ROOT/phone
CASESYNC_COLLECT_PASSWORD=bench-worker-password "$BIN" collect login --server "$BASE" --username bench >/dev/null
"$BIN" collect pull >/dev/null
local what=submission
if [ "$DOOR" = jwe ]; then
  start=$(date +%s.%N)
  "$BIN" collect fill kz.referral referral.json --count "$N" >/dev/null
  fill_secs=$(python3 -c "import time; print(f'{time.time() - $start:.1f}')")
  echo "prepared $N encrypted referrals on the collector in ${fill_secs} s"
  echo "pushing with $C concurrent clients, one submission per request, into $(label "$CURRENT")"
  [ -z "$PG_DB" ] || pg_cpu "$PG_DB" >pg-before
  server_before=$(cpu "$SERVER")
  /usr/bin/time -f "collector: %U s user, %S s system CPU" \
    "$BIN" collect push --batch 1 --concurrency "$C" --retries 3 --stats 2>&1 | tee push.log
  RATE=$(grep -o '[0-9]* accepted/s' push.log | tail -1 | cut -d' ' -f1)
else
  echo "pushing the same $N referrals as ODK Collect does (encrypted multipart, OpenRosa) with $C concurrent clients into $(label "$CURRENT")"
  what="OpenRosa submission"
  [ -z "$PG_DB" ] || pg_cpu "$PG_DB" >pg-before
  server_before=$(cpu "$SERVER")
  /usr/bin/time -f "collector: %U s user, %S s system CPU" \
    "$BIN" collect odk-push kz.referral referral.json --count "$N" --concurrency "$C" 2>&1 | tee push.log
  RATE=$(grep -o '[0-9]* submissions/s' push.log | tail -1 | cut -d' ' -f1)
fi
server_after=$(cpu "$SERVER")
if [ -n "$PG_DB" ]; then
  pg_cpu "$PG_DB" >pg-after
  cpu_report "$server_before" "$server_after" pg-before pg-after "$what" | tee cpu.log
else
  cpu_report "$server_before" "$server_after" "" "" "$what" | tee cpu.log
fi
LINES="$(grep -E 'accepted/s|submissions/s' push.log | tail -1)
$(cat cpu.log)"
if [ "$DOOR" != jwe ]; then
  echo
  echo "formList of the programme as ODK Collect asks for it, one client, then $C clients:"
  "$BIN" collect odk-formlist kz --count 2000 --concurrency 1
  "$BIN" collect odk-formlist kz --count 2000 --concurrency "$C"
fi

kill "$SERVER"; wait "$SERVER" 2>/dev/null || true
SERVER=
}

# Everything for database $CURRENT: the empty run, the OpenRosa run, the
# stored run; each one's figures kept for the summary in $SUMMARY.
SUMMARY=
keep() { # title
  SUMMARY="$SUMMARY
[$(label "$CURRENT")] $1:
$(echo "$LINES" | sed 's/^/  /')"
}
for CURRENT in $DATABASES; do
NAME=$(label "$CURRENT")
if [ "$CURRENT" = postgres ]; then
  echo "== PostgreSQL at ${ADMIN_URL##*@} (a new database per run, dropped after it): $(
    psql -qtA "$ADMIN_URL" -c "SELECT 'version ' || current_setting('server_version') || ', fsync=' || current_setting('fsync') || ', synchronous_commit=' || current_setting('synchronous_commit') || ', full_page_writes=' || current_setting('full_page_writes')")"
else
  echo "== SQLite (SQLCipher) in the data directory, synchronous=FULL"
fi
echo "== $NAME: empty database"
new_store "$CURRENT" empty
run_bench "$WORK/$CURRENT-empty"
drop_store
EMPTY_RATE=$RATE
keep "$N referrals into an empty database"
if [ "$MODE" = openrosa ]; then
  echo
  echo "== $NAME: ODK Collect's door, a new empty database"
  new_store "$CURRENT" odk
  run_bench "$WORK/$CURRENT-empty-odk" openrosa
  drop_store
  keep "the same through ODK Collect's door, a new empty database"
  python3 - "$EMPTY_RATE" "$RATE" "$N" "$NAME" <<'PY' | tee -a summary.log
import sys
jwe, odk, n = (int(a) for a in sys.argv[1:4])
print(f"[{sys.argv[4]}] {n} referrals into an empty database: JWE {jwe}/s, OpenRosa {odk}/s: "
      f"OpenRosa at {100 * odk / jwe:.0f} % of the JWE rate")
PY
fi
if [ "$STORED" -gt 0 ]; then
  echo
  new_store "$CURRENT" stored
  if [ -n "${SEEDED:-}" ]; then
    echo "== a copy of the seeded data directory $SEEDED"
    cp -a "$SEEDED" "$WORK/$CURRENT-stored"
  else
    echo "== $NAME: seeding $STORED submissions: $((STORED / 10)) cases of about 10 forms each"
    /usr/bin/time -f "seed: %e s, peak RSS %M KB" \
      "$BIN" --data-dir "$WORK/$CURRENT-stored" seed --cases "$((STORED / 10))" --forms-per-case 10 \
      --fixtures "$ROOT/tests/fixtures/forms"
    if [ -n "$PG_DB" ]; then
      echo "database size: $(psql -qtA "$ADMIN_URL" -c "SELECT pg_size_pretty(pg_database_size('$PG_DB'))")"
    else
      echo "database size: $(du -sh "$WORK/$CURRENT-stored" | cut -f1)"
    fi
  fi
  echo
  echo "== $NAME: the same push into the database holding those submissions"
  run_bench "$WORK/$CURRENT-stored"
  drop_store
  rm -rf "$WORK/$CURRENT-stored"
  STORED_RATE=$RATE
  keep "the same push with $STORED submissions stored before"
  echo
  python3 - "$EMPTY_RATE" "$STORED_RATE" "$STORED" "$N" "$NAME" <<'PY' | tee -a summary.log
import sys
empty, stored, count, n = (int(a) for a in sys.argv[1:5])
print(f"[{sys.argv[5]}] ingest of {n} referrals: {empty} accepted/s into an empty database, "
      f"{stored} accepted/s with {count:,} submissions stored before: "
      f"{100 * stored / empty:.0f} % of the empty rate")
PY
fi
rm -rf "$WORK/$CURRENT-empty" "$WORK/$CURRENT-empty-odk"
echo
done

if [ "$DATABASE" = both ]; then
  echo "== side by side: $N referrals, $C clients, one submission per request"
  echo "$SUMMARY" | sed '1d'
  [ ! -s summary.log ] || cat summary.log
  echo
fi
echo "uptime: $(uptime)"
echo "openssl speed rsa2048 (a private-key operation per submission sets the ceiling):"
openssl speed -seconds 3 rsa2048 2>/dev/null | tail -n 2 || echo "(openssl not available)"
