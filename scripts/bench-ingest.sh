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
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${MODE:-jwe}
N=${N:-20000}
C=${C:-32}
PORT=${PORT:-18437}
STORED=${STORED:-0}
ROOT=$PWD

if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet
  BIN=$ROOT/target/release/casesync
fi
BIN=$(realpath "$BIN")
WORK=$(mktemp -d "${TMPDIR:-/tmp}/casesync-bench.XXXXXX")
SERVER=
cleanup() {
  if [ -n "$SERVER" ]; then kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; fi
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

# One run: a server on data directory $1 (made by `serve` when empty),
# the bench worker, N referrals pushed by C clients through door $2 (`jwe`,
# the default, or `openrosa`). Leaves the rate in $RATE and stops the server.
RATE=
run_bench() {
local DATA_DIR=$1 DOOR=${2:-jwe}
CASESYNC_BIND=127.0.0.1:$PORT CASESYNC_LOG_FORMAT=json RUST_LOG=warn "$BIN" --data-dir "$DATA_DIR" serve 2>>server.log &
SERVER=$!
BASE=http://127.0.0.1:$PORT
for _ in $(seq 1 100); do
  curl -fs "$BASE/readyz" >/dev/null 2>&1 && break
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
if [ "$DOOR" = jwe ]; then
start=$(date +%s.%N)
"$BIN" collect fill kz.referral referral.json --count "$N" >/dev/null
fill_secs=$(python3 -c "import time; print(f'{time.time() - $start:.1f}')")
echo "prepared $N encrypted referrals on the collector in ${fill_secs} s"
echo "pushing with $C concurrent clients, one submission per request, into SQLite"
server_before=$(cpu "$SERVER")
/usr/bin/time -f "collector: %U s user, %S s system CPU" \
  "$BIN" collect push --batch 1 --concurrency "$C" --retries 3 --stats 2>&1 | tee push.log
RATE=$(grep -o '[0-9]* accepted/s' push.log | tail -1 | cut -d' ' -f1)
server_after=$(cpu "$SERVER")
python3 - "$server_before" "$server_after" "$(getconf CLK_TCK)" "$N" <<'PY'
import sys
(u0, s0), (u1, s1) = (map(int, a.split()) for a in sys.argv[1:3])
hz, n = int(sys.argv[3]), int(sys.argv[4])
user, system = (u1 - u0) / hz, (s1 - s0) / hz
print(f"server: {user:.1f} s user + {system:.1f} s system CPU, "
      f"{(user + system) * 1e3 / n:.2f} ms CPU per submission")
PY

else
  echo "pushing the same $N referrals as ODK Collect does (encrypted multipart, OpenRosa) with $C concurrent clients"
  server_before=$(cpu "$SERVER")
  /usr/bin/time -f "collector: %U s user, %S s system CPU" \
    "$BIN" collect odk-push kz.referral referral.json --count "$N" --concurrency "$C" 2>&1 | tee push.log
  RATE=$(grep -o '[0-9]* submissions/s' push.log | tail -1 | cut -d' ' -f1)
  server_after=$(cpu "$SERVER")
  python3 - "$server_before" "$server_after" "$(getconf CLK_TCK)" "$N" <<'PY'
import sys
(u0, s0), (u1, s1) = (map(int, a.split()) for a in sys.argv[1:3])
hz, n = int(sys.argv[3]), int(sys.argv[4])
user, system = (u1 - u0) / hz, (s1 - s0) / hz
print(f"server: {user:.1f} s user + {system:.1f} s system CPU, "
      f"{(user + system) * 1e3 / n:.2f} ms CPU per OpenRosa submission")
PY
  echo
  echo "formList of the programme as ODK Collect asks for it, one client, then $C clients:"
  "$BIN" collect odk-formlist kz --count 2000 --concurrency 1
  "$BIN" collect odk-formlist kz --count 2000 --concurrency "$C"
fi

kill "$SERVER"; wait "$SERVER" 2>/dev/null || true
SERVER=
}
cpu() { awk '{print $14 " " $15}' "/proc/$1/stat"; }  # user, system ticks

echo "== empty database"
run_bench "$WORK/empty"
EMPTY_RATE=$RATE
if [ "$MODE" = openrosa ]; then
  echo
  echo "== ODK Collect's door, a new empty database"
  run_bench "$WORK/empty-odk" openrosa
  python3 - "$EMPTY_RATE" "$RATE" "$N" <<'PY'
import sys
jwe, odk, n = (int(a) for a in sys.argv[1:4])
print(f"{n} referrals into an empty database: JWE {jwe}/s, OpenRosa {odk}/s: "
      f"OpenRosa at {100 * odk / jwe:.0f} % of the JWE rate")
PY
fi
if [ "$STORED" -gt 0 ]; then
  echo
  if [ -n "${SEEDED:-}" ]; then
    echo "== a copy of the seeded data directory $SEEDED"
    cp -a "$SEEDED" "$WORK/stored"
  else
    echo "== seeding $STORED submissions: $((STORED / 10)) cases of about 10 forms each"
    /usr/bin/time -f "seed: %e s, peak RSS %M KB" \
      "$BIN" --data-dir "$WORK/stored" seed --cases "$((STORED / 10))" --forms-per-case 10 \
      --fixtures "$ROOT/tests/fixtures/forms"
  fi
  echo
  echo "== the same push into the database holding those submissions"
  run_bench "$WORK/stored"
  STORED_RATE=$RATE
  echo
  python3 - "$EMPTY_RATE" "$STORED_RATE" "$STORED" "$N" <<'PY'
import sys
empty, stored, count, n = (int(a) for a in sys.argv[1:5])
print(f"ingest of {n} referrals: {empty} accepted/s into an empty database, "
      f"{stored} accepted/s with {count:,} submissions stored before: "
      f"{100 * stored / empty:.0f} % of the empty rate")
PY
fi

echo
echo "openssl speed rsa2048 (a private-key operation per submission sets the ceiling):"
openssl speed -seconds 3 rsa2048 2>/dev/null | tail -n 2 || echo "(openssl not available)"
