#!/usr/bin/env bash
# Scale-out benchmark (#19 item 6): one PostgreSQL and two casesync servers
# on loopback, started at the same moment from the shared key files of
# `casesync keys shared` (docs/operations.md, "Several servers"). Phones
# are spread over both: two collectors, one signed in to each server, each
# pushing N/2 distinct encrypted KZ referrals with C/2 concurrent clients
# (one submission per request) and knowing the other server's address.
# Prints each server's rate and the total, then checks the database with
# `casesync cases check`: every acknowledged submission stored exactly once,
# case numbers unique per site and without gaps, every case equal to a fold
# of its events from scratch.
#
# Then the same again, and server b is killed with SIGKILL once its phone
# has a third of its share acknowledged: that phone's requests go on to
# server a (the collector's several --server addresses), and the check
# must still pass — nothing acknowledged lost.
#
#   scripts/bench-scaleout.sh                       # N=6000, C=32
#   N=2000 C=16 scripts/bench-scaleout.sh
#   BIN=target/debug/casesync DATABASE_URL=postgres://… scripts/bench-scaleout.sh
#
# DATABASE_URL names a PostgreSQL database whose server may create others
# (default: scripts/start-postgres.sh); a new database is made and dropped.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-6000}
C=${C:-32}
PORT_A=${PORT_A:-18441}
PORT_B=${PORT_B:-18442}
ROOT=$PWD

if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet
  BIN=$ROOT/target/release/casesync
fi
BIN=$(realpath "$BIN")
ADMIN_URL=${DATABASE_URL:-$(scripts/start-postgres.sh)}
DB_NAME=casesync_scaleout_$$
DB_URL=${ADMIN_URL%/*}/$DB_NAME
WORK=$(mktemp -d "${TMPDIR:-/tmp}/casesync-scaleout.XXXXXX")
PHONE_ROOT=$WORK
[ -d /dev/shm ] && [ -w /dev/shm ] && PHONE_ROOT=$(mktemp -d /dev/shm/casesync-phones.XXXXXX)
A= B=
cleanup() {
  for pid in $A $B; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  psql -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$WORK"
  case "$PHONE_ROOT" in /dev/shm/*) rm -rf "$PHONE_ROOT" ;; esac
}
trap cleanup EXIT
psql -q "$ADMIN_URL" -c "CREATE DATABASE $DB_NAME" >/dev/null
export CASESYNC_DATABASE_URL=$DB_URL
cd "$WORK"

# The deployment's key files, made once and copied to each server.
"$BIN" keys shared --out keys >/dev/null
for s in a b; do
  mkdir -m 700 -p "$s/data"
  cp -p keys/master.key keys/audit.key "$s/data/"
done
serve() { # name port; run in the background, it becomes the server
  cd "$1"
  CASESYNC_BIND=127.0.0.1:$2 CASESYNC_LOG_FORMAT=json RUST_LOG=warn exec "$BIN" serve 2>server.log
}
serve a "$PORT_A" & A=$!
serve b "$PORT_B" & B=$!
BASE_A=http://127.0.0.1:$PORT_A
BASE_B=http://127.0.0.1:$PORT_B
for base in "$BASE_A" "$BASE_B"; do
  for _ in $(seq 1 300); do
    curl -fs "$base/readyz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  curl -fs "$base/readyz" >/dev/null || { echo "a server did not start:"; cat a/server.log b/server.log; exit 1; }
done
echo "two servers started together on a new database: $BASE_A (a), $BASE_B (b)"

json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
# The first admin is made by whichever server started first.
INITIAL=$(cat a/data/initial-admin-password 2>/dev/null || cat b/data/initial-admin-password)
TOKEN=$(curl -fs -H 'Content-Type: application/json' \
  -d "{\"username\":\"admin\",\"password\":\"$INITIAL\"}" "$BASE_A/api/v1/sessions" | json "['token']")
TOKEN=$(curl -fs -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
  -d "{\"current_password\":\"$INITIAL\",\"new_password\":\"bench-admin-password\"}" "$BASE_B/api/v1/me/password" | json "['token']")
SITE=$(curl -fs -H "Authorization: Bearer $TOKEN" "$BASE_A/api/v1/sites" |
  python3 -c "import json,sys; print([s['id'] for s in json.load(sys.stdin)['items'] if s['code']=='KZ-CAM-ALA'][0])")
curl -fs -o /dev/null -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
  -d "{\"username\":\"bench\",\"role\":\"field_worker\",\"site_ids\":[\"$SITE\"],\"password\":\"bench-worker-password\"}" \
  "$BASE_B/api/v1/users"

python3 - "$ROOT/tests/fixtures/forms/kz.referral/valid.json" > referral.json <<'PY'
import json, sys
data = json.load(open(sys.argv[1]))
data["signoff"]["referrer_signature"].pop("signature", None)
print(json.dumps(data))
PY

# Phone fleet a signs in to server a, fleet b to b; each knows both.
PHONE_A=$PHONE_ROOT/phone-a
PHONE_B=$PHONE_ROOT/phone-b
export CASESYNC_COLLECT_PASSWORD=bench-worker-password
"$BIN" collect --dir "$PHONE_A" login --server "$BASE_A" --username bench >/dev/null
"$BIN" collect --dir "$PHONE_B" login --server "$BASE_B" --username bench >/dev/null
"$BIN" collect --dir "$PHONE_A" pull >/dev/null
"$BIN" collect --dir "$PHONE_B" pull >/dev/null
HALF=$((N / 2))
fill() { # phone count
  "$BIN" collect --dir "$1" fill kz.referral referral.json --count "$2" >/dev/null
}
push() { # phone first second out
  "$BIN" collect --dir "$1" push --batch 1 --concurrency $((C / 2)) --retries 5 \
    --server "$2" --server "$3" --stats >"$4" 2>&1
}
fill_both() {
  fill "$PHONE_A" "$HALF" & local fa=$!
  fill "$PHONE_B" "$HALF" & local fb=$!
  wait "$fa"; wait "$fb"
}
sent() { find "$1/sent" -type f | wc -l; }
check() {
  "$BIN" --data-dir a/data cases check --acknowledged-by "$PHONE_A" --acknowledged-by "$PHONE_B"
}

fill_both
echo "prepared $HALF encrypted referrals on each of two collectors"
echo
echo "== both servers up: $N referrals, $((C / 2)) clients per server, one submission per request"
start=$(date +%s.%N)
push "$PHONE_A" "$BASE_A" "$BASE_B" push-a.out & PA=$!
push "$PHONE_B" "$BASE_B" "$BASE_A" push-b.out & PB=$!
wait "$PA"; wait "$PB"
secs=$(python3 -c "import time; print(f'{time.time() - $start:.2f}')")
echo "server a: $(grep accepted/s push-a.out)"
echo "server b: $(grep accepted/s push-b.out)"
python3 -c "print(f'total: $N accepted in $secs s: {$N / $secs:.0f} accepted/s')"
check

echo
echo "== kill -9 of server b mid-run: $N more referrals, the same spread"
fill_both
before_b=$(sent "$PHONE_B")
start=$(date +%s.%N)
push "$PHONE_A" "$BASE_A" "$BASE_B" push-a.out & PA=$!
push "$PHONE_B" "$BASE_B" "$BASE_A" push-b.out & PB=$!
while [ "$(sent "$PHONE_B")" -lt $((before_b + HALF / 3)) ]; do sleep 0.05; done
kill -9 "$B"
at_kill=$(( $(sent "$PHONE_B") - before_b ))
echo "killed server b (SIGKILL) after phone b had $at_kill of its $HALF acknowledged"
status=0
wait "$PA" || status=$?
wait "$PB" || status=$?
secs=$(python3 -c "import time; print(f'{time.time() - $start:.2f}')")
echo "phone a: $(grep -E 'pushed|accepted/s' push-a.out | tr '\n' ' ')"
echo "phone b: $(grep -E 'pushed|accepted/s' push-b.out | tr '\n' ' ')"
python3 -c "print(f'total: $N in $secs s: {$N / $secs:.0f} accepted/s with server b killed along the way')"
[ "$status" -eq 0 ] || { echo "a push did not finish:"; cat push-a.out push-b.out; exit 1; }
check
B=
