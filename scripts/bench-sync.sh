#!/usr/bin/env bash
# Sync at the scale of a country (#19 item 7): PHONES field workers (1,000)
# with CASES_EACH open cases each (50: 50,000 cases), every phone pulling
# `GET /api/v1/sync` from its cursor every PERIOD seconds (30) while
# submissions arrive; a release server on embedded SQLite (SQLCipher, as
# shipped) over loopback.
#
# The data directory is filled by `casesync seed` (no HTTP): KZ cases at the
# three KZ sites, each a distinct child, given to the field workers in turn
# (`--workers PHONES --in-turn --all-open`), FORMS forms each on average (1:
# the referral that opened it, with its deadlines; a sync reads a case's
# row and open deadlines, not its forms, and each form more adds about a
# third to the seed's 2.5 minutes), and a device token per worker
# (`--device-tokens`: no Argon2 per phone).
#
# The phones are scripts/bench-sync-phones.py (Python 3's standard library):
# phone i syncs in full at i/PHONES of the period, then pulls from its
# cursor every period (again at once while the answer says `more`), each
# sync on a connection of its own. They run for the whole push, one period
# after it and two periods in all at least, so every phone has synced in
# full and pulled from its cursor.
#
# The push is bench-ingest.sh's: N distinct encrypted KZ referrals (20,000)
# from `casesync collect push` with C clients (32), one submission per
# request, by a field worker who holds no phone here (its new cases are
# changes in the log every phone's cursor pull passes over). Beside it, FU
# of the phones' workers (20) push a follow-up form (`kz.communication`) on
# each of their 50 cases, one request at a time: those phones find the
# changed cases at their next pull.
#
# Three pushes into one server, alternating: without the phones, with them,
# without again (the database grows by N cases a push; the two rounds
# without bracket the one with). Prints each round's ingest rate, the sync
# latency (p50, p99, max, count) of the first full syncs, the cursor pulls,
# and of every sync that started while the push ran, then the comparison
# with the bounds: p99 of a sync while submissions arrive < 50 ms, ingest
# with the phones >= 80 % of the rate without; `uptime` and
# `openssl speed rsa2048` in the same run.
#
#   scripts/bench-sync.sh                      # 1,000 phones, 30 s, 50 cases each
#   PHONES=200 PERIOD=10 N=5000 scripts/bench-sync.sh
#   KEEP=DIR scripts/bench-sync.sh             # keep the seeded data directory
#   DATA=DIR scripts/bench-sync.sh             # start from a copy of one kept
#   DATA=DIR INPLACE=1 scripts/bench-sync.sh   # ... or from it as it is (no copy)
#   BIN=target/release/casesync ...            # a binary already built
set -euo pipefail
cd "$(dirname "$0")/.."
PHONES=${PHONES:-1000}
CASES_EACH=${CASES_EACH:-50}
PERIOD=${PERIOD:-30}
N=${N:-20000}
C=${C:-32}
FORMS=${FORMS:-1}
FU=${FU:-20}
FOLLOW_UP=${FOLLOW_UP:-kz.communication}
PORT=${PORT:-18451}
ROOT=$PWD

if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet
  BIN=$ROOT/target/release/casesync
fi
BIN=$(realpath "$BIN")
PHONES_PY=$ROOT/scripts/bench-sync-phones.py
FIXTURES=$ROOT/tests/fixtures/forms
WORK=$(mktemp -d "${TMPDIR:-/tmp}/casesync-sync.XXXXXX")
PHONE_ROOT=$WORK/collectors
[ -d /dev/shm ] && [ -w /dev/shm ] && PHONE_ROOT=$(mktemp -d /dev/shm/casesync-sync.XXXXXX)
SERVER= FLEET=
cleanup() {
  for pid in $FLEET $SERVER; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
  case "$PHONE_ROOT" in /dev/shm/*) rm -rf "$PHONE_ROOT" ;; esac
}
trap cleanup EXIT
cd "$WORK"
umask 077

DATA_DIR=$WORK/data
TOKENS=bench-phones.tokens
if [ -n "${DATA:-}" ] && [ -n "${INPLACE:-}" ]; then
  echo "== the seeded data directory $DATA itself (it keeps what the pushes add)"
  DATA_DIR=$(realpath "$DATA")
elif [ -n "${DATA:-}" ]; then
  echo "== a copy of the seeded data directory $DATA"
  cp -a "$DATA" "$DATA_DIR"
else
  SEED_DIR=${KEEP:-$DATA_DIR}
  echo "== seeding $((PHONES * CASES_EACH)) open KZ cases (about $FORMS forms each), $CASES_EACH to each of $PHONES field workers"
  /usr/bin/time -f "seed: %e s, peak RSS %M KB" \
    "$BIN" --data-dir "$SEED_DIR" seed --programme kz --cases $((PHONES * CASES_EACH)) \
    --forms-per-case "$FORMS" --workers "$PHONES" --in-turn --all-open \
    --device-tokens "$SEED_DIR/$TOKENS" --fixtures "$FIXTURES" | grep -v '^  '
  if [ -n "${KEEP:-}" ]; then cp -a "$KEEP" "$DATA_DIR"; fi
fi
[ "$(wc -l <"$DATA_DIR/$TOKENS")" -ge "$PHONES" ] ||
  { echo "$DATA_DIR/$TOKENS holds fewer than $PHONES device tokens"; exit 1; }
du -sh "$DATA_DIR" | awk '{print "data directory: " $1}'

CASESYNC_BIND=127.0.0.1:$PORT CASESYNC_LOG_FORMAT=json RUST_LOG=warn "$BIN" --data-dir "$DATA_DIR" serve 2>>server.log &
SERVER=$!
BASE=http://127.0.0.1:$PORT
for _ in $(seq 1 300); do
  curl -fs "$BASE/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fs "$BASE/readyz" >/dev/null || { echo "the server did not start:"; cat server.log; exit 1; }

json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
SEEDED_PASSWORD='Seeded bench passphrase 71'
TOKEN=$(curl -fs -H 'Content-Type: application/json' \
  -d "{\"username\":\"seed-admin\",\"password\":\"$SEEDED_PASSWORD\"}" "$BASE/api/v1/sessions" | json "['token']")
SITE=$(curl -fs -H "Authorization: Bearer $TOKEN" "$BASE/api/v1/sites" |
  python3 -c "import json,sys; print([s['id'] for s in json.load(sys.stdin)['items'] if s['code']=='KZ-CAM-ALA'][0])")
# The referrals' sender: a field worker without a phone in the fleet, new
# in each run (on a reused directory an earlier run's sender holds its
# referrals, which its collector's first sync would carry).
SENDER=bench-$(date +%s)
curl -fs -o /dev/null -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
  -d "{\"username\":\"$SENDER\",\"role\":\"field_worker\",\"site_ids\":[\"$SITE\"],\"password\":\"bench-worker-password\"}" \
  "$BASE/api/v1/users"

python3 - "$FIXTURES/kz.referral/valid.json" > referral.json <<'PY'
import json, sys
data = json.load(open(sys.argv[1]))
data["signoff"]["referrer_signature"].pop("signature", None)
print(json.dumps(data))
PY
cp "$FIXTURES/$FOLLOW_UP/valid.json" follow-up.json

# Each round's collectors, filled before any clock starts: the referrals
# of `bench`, and FU phones' workers (different ones each round) with a
# follow-up on each of their cases.
ROUNDS=3
follow_up_collector() { # round, number
  local dir=$PHONE_ROOT/follow-up-$1-$2 line=$(( ($1 - 1) * FU + $2 ))
  sed -n "${line}p" "$DATA_DIR/$TOKENS" | cut -d' ' -f2 >"token-$1-$2"
  "$BIN" collect --dir "$dir" login --server "$BASE" --token-file "token-$1-$2" >/dev/null
  "$BIN" collect --dir "$dir" pull >/dev/null
  "$BIN" collect --dir "$dir" fill "$FOLLOW_UP" follow-up.json --each-case >/dev/null
}
start=$(date +%s.%N)
fills=() batch=()
for r in $(seq 1 $ROUNDS); do
  dir=$PHONE_ROOT/referrals-$r
  CASESYNC_COLLECT_PASSWORD=bench-worker-password "$BIN" collect --dir "$dir" login --server "$BASE" --username "$SENDER" >/dev/null
  "$BIN" collect --dir "$dir" pull >/dev/null
  "$BIN" collect --dir "$dir" fill kz.referral referral.json --count "$N" >/dev/null &
  fills+=($!)
done
for r in $(seq 1 $ROUNDS); do
  for j in $(seq 1 "$FU"); do
    # A few at a time: each signs in and syncs its worker's cases.
    follow_up_collector "$r" "$j" & batch+=($!)
    if [ "${#batch[@]}" -eq 4 ]; then wait "${batch[@]}"; batch=(); fi
  done
done
for pid in "${batch[@]}" "${fills[@]}"; do wait "$pid"; done
python3 -c "import time; print(f'prepared {$ROUNDS} × ($N referrals + $FU × $CASES_EACH follow-ups) on the collectors in {time.time() - $start:.0f} s')"

cpu() { awk '{print $14 " " $15}' "/proc/$1/stat"; }  # user, system ticks
RATES=()
# One round: the push (and the phones when $2 is "phones"). Leaves the
# referral push's rate in RATES.
round() {
  local r=$1 with=${2:-}
  echo
  if [ "$with" = phones ]; then
    echo "== round $r: the push with $PHONES phones syncing every $PERIOD s"
    rm -f stop-phones
    python3 "$PHONES_PY" run "$BASE" "$DATA_DIR/$TOKENS" syncs.txt stop-phones \
      --phones "$PHONES" --period "$PERIOD" &
    FLEET=$!
  else
    echo "== round $r: the push without phones"
  fi
  local before push_start push_end pids=()
  before=$(cpu "$SERVER")
  push_start=$(date +%s.%N)
  "$BIN" collect --dir "$PHONE_ROOT/referrals-$r" push --batch 1 --concurrency "$C" \
    --retries 3 --stats >"push-$r.log" 2>&1 &
  pids+=($!)
  for j in $(seq 1 "$FU"); do
    "$BIN" collect --dir "$PHONE_ROOT/follow-up-$r-$j" push --batch 1 --concurrency 1 \
      --retries 3 >"follow-up-$r-$j.log" 2>&1 &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid"; done
  push_end=$(date +%s.%N)
  grep 'accepted/s' "push-$r.log"
  RATES+=("$(grep -o '[0-9]* accepted/s' "push-$r.log" | tail -1 | cut -d' ' -f1)")
  local followed
  followed=$(find "$PHONE_ROOT"/follow-up-$r-*/sent -type f | wc -l)
  echo "follow-ups on the phones' cases acknowledged alongside: $followed of $((FU * CASES_EACH))"
  python3 - "$before" "$(cpu "$SERVER")" "$(getconf CLK_TCK)" "$N" "$push_start" "$push_end" <<'PY'
import sys
(u0, s0), (u1, s1) = (map(int, a.split()) for a in sys.argv[1:3])
hz, n, t0, t1 = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
busy = (u1 - u0 + s1 - s0) / hz
print(f"server: {busy:.1f} s CPU over the push's {t1 - t0:.1f} s ({busy / (t1 - t0) * 100:.0f} % of one core)")
PY
  if [ "$with" = phones ]; then
    touch stop-phones
    wait "$FLEET"
    FLEET=
    echo "phones stopped $(python3 -c "import time; print(f'{time.time() - $push_end:.0f}')") s after the push ended"
    python3 "$PHONES_PY" report syncs.txt --window "$push_start" "$push_end" | tee sync-report.txt
  fi
}

round 1
round 2 phones
round 3

echo
python3 - "${RATES[@]}" "$PHONES" "$PERIOD" "$N" <<'PY'
import json, sys
without_1, with_phones, without_2 = (int(a) for a in sys.argv[1:4])
phones, period, n = sys.argv[4], sys.argv[5], sys.argv[6]
summary = json.loads(open("sync-report.txt").read().split("SUMMARY ", 1)[1])
without = (without_1 + without_2) / 2
share = 100 * with_phones / without
during = summary["while the push ran"]
every = summary["every sync"]
print(f"ingest of {n} referrals: {without_1}/s and {without_2}/s without phones, "
      f"{with_phones}/s with {phones} phones syncing every {period} s: "
      f"{share:.0f} % of the rate without (bound: at least 80 %) — "
      f"{'met' if share >= 80 else 'NOT met'}")
print(f"sync while submissions arrived: {during['count']} syncs, p50 {during['p50_ms']:.1f} ms, "
      f"p99 {during['p99_ms']:.1f} ms, max {during['max_ms']:.1f} ms (bound: p99 under 50 ms) — "
      f"{'met' if during['p99_ms'] < 50 and during['failed'] == 0 else 'NOT met'}; "
      f"every sync of the run: p99 {every['p99_ms']:.1f} ms over {every['count']}, {every['failed']} failed")
PY
echo "load: $(uptime)"
echo
echo "openssl speed rsa2048 (a private-key operation per submission sets the ingest ceiling):"
openssl speed -seconds 3 rsa2048 2>/dev/null | tail -n 2 || echo "(openssl not available)"
