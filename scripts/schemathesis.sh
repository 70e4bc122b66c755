#!/usr/bin/env bash
# Schemathesis against a fresh test server: every operation of the OpenAPI
# document (GET /api/v1/openapi.json) as each role — admin, coordinator,
# field worker, viewer, all of one KZ site that has a case — checking that
# nothing answers 5xx, every answer matches its schema (status, media type,
# body), and no route accepts what its schema refuses (negative data).
#
#   scripts/schemathesis.sh                 # 20 examples per operation and role
#   MAX_EXAMPLES=100 scripts/schemathesis.sh
#   ROLES="coordinator" scripts/schemathesis.sh
#
# Needs `st` (PyPI schemathesis); installed into target/st-venv when absent
# (SCHEMATHESIS=/path/to/st to use another). Builds the debug binary.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MAX_EXAMPLES=${MAX_EXAMPLES:-20}
ROLES=${ROLES:-"admin coordinator field_worker viewer"}
PORT=${PORT:-18467}
SEED=${SEED:-16}

ST=${SCHEMATHESIS:-$ROOT/target/st-venv/bin/st}
if [ ! -x "$ST" ]; then
  python3 -m venv "$ROOT/target/st-venv"
  "$ROOT/target/st-venv/bin/pip" install --quiet --disable-pip-version-check 'schemathesis>=4.32,<5'
  ST=$ROOT/target/st-venv/bin/st
fi

cargo build --quiet --bin casesync
BIN=$ROOT/target/debug/casesync
WORK=$(mktemp -d "${TMPDIR:-/tmp}/casesync-schemathesis.XXXXXX")
SERVER=
cleanup() {
  if [ -n "$SERVER" ]; then kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
cd "$WORK"

# The login throttle would soon lock schemathesis's made-up logins out
# (429, which the document allows); raised so login is exercised instead.
CASESYNC_BIND=127.0.0.1:$PORT CASESYNC_LOG_FORMAT=json RUST_LOG=warn \
  CASESYNC_LOGIN__SLOW_AFTER=1000000 CASESYNC_LOGIN__LOCK_AFTER=2000000 \
  CASESYNC_LOGIN__ADDRESS_SLOW_AFTER=1000000 \
  "$BIN" serve 2>server.log &
SERVER=$!
BASE=http://127.0.0.1:$PORT
for _ in $(seq 1 300); do
  kill -0 "$SERVER" 2>/dev/null || { cat server.log; exit 1; }
  curl -fs "$BASE/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done

json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
post() { # token path body
  curl -fsS -H "Authorization: Bearer $1" -H 'Content-Type: application/json' -d "$3" "$BASE/api/v1$2"
}
INITIAL=$(cat data/initial-admin-password)
TOKEN=$(curl -fsS -H 'Content-Type: application/json' \
  -d "{\"username\":\"admin\",\"password\":\"$INITIAL\"}" "$BASE/api/v1/sessions" | json "['token']")
ADMIN=$(post "$TOKEN" /me/password \
  "{\"current_password\":\"$INITIAL\",\"new_password\":\"schemathesis-admin-pw\"}" | json "['token']")
SITE=$(curl -fsS -H "Authorization: Bearer $ADMIN" "$BASE/api/v1/sites" |
  python3 -c "import json,sys; print([s['id'] for s in json.load(sys.stdin)['items'] if s['code']=='KZ-CAM-ALA'][0])")
declare -A TOKENS=([admin]=$ADMIN)
for role in coordinator field_worker viewer; do
  post "$ADMIN" /users "{\"username\":\"st-$role\",\"role\":\"$role\",\"site_ids\":[\"$SITE\"],\"password\":\"schemathesis-$role-pw\"}" >/dev/null
  TOKENS[$role]=$(curl -fsS -H 'Content-Type: application/json' \
    -d "{\"username\":\"st-$role\",\"password\":\"schemathesis-$role-pw\"}" "$BASE/api/v1/sessions" | json "['token']")
done

# One case, opened by the field worker's referral through the collector,
# so lists and reads answer with data whose shape is checked too.
python3 - "$ROOT/tests/fixtures/forms/kz.referral/valid.json" > referral.json <<'PY'
import json, sys
data = json.load(open(sys.argv[1]))
data["signoff"]["referrer_signature"].pop("signature", None)
print(json.dumps(data))
PY
export CASESYNC_COLLECT_DIR=$WORK/phone
CASESYNC_COLLECT_PASSWORD=schemathesis-field_worker-pw "$BIN" collect login --server "$BASE" --username st-field_worker >/dev/null
"$BIN" collect pull >/dev/null
"$BIN" collect fill kz.referral referral.json >/dev/null
"$BIN" collect push >/dev/null
CASE=$(curl -fsS -H "Authorization: Bearer ${TOKENS[coordinator]}" "$BASE/api/v1/cases" | json "['items'][0]['id']")
VERSION=$(curl -fsS -H "Authorization: Bearer $ADMIN" "$BASE/api/v1/forms" |
  python3 -c "import json,sys; print([f['current_version'] for f in json.load(sys.stdin)['items'] if f['id']=='kz.referral'][0])")
# Operations on that case and that form get their real ids (other
# operations' ids are generated: mostly 404s, which the document allows),
# so their bodies are tried on something that exists.
cat >schemathesis.toml <<TOML
[[operations]]
include-path-regex = "^/cases/[{]id[}]"
parameters = { "path.id" = "$CASE" }

[[operations]]
include-path-regex = "^/forms/[{]id[}]"
parameters = { "path.id" = "kz.referral", "path.version" = "$VERSION", "path.a" = "$VERSION", "path.b" = "$VERSION" }
TOML

# Logging out would end the session the run uses; `POST /me/password`
# cannot succeed without the password, and is exercised by tests.
status=0
LOGS=$ROOT/target/schemathesis
mkdir -p "$LOGS"
summary=$LOGS/summary.txt
: >"$summary"
for role in $ROLES; do
  echo
  echo "==> schemathesis as $role ($MAX_EXAMPLES examples per operation)"
  started=$(date +%s)
  set +e
  PYTHONPATH="$ROOT/scripts" SCHEMATHESIS_HOOKS=schemathesis_hooks "$ST" --config-file "$WORK/schemathesis.toml" run "$BASE/api/v1/openapi.json" \
    --header "Authorization: Bearer ${TOKENS[$role]}" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,negative_data_rejection \
    --exclude-path /sessions/current \
    --phases examples,coverage,fuzzing \
    --max-examples "$MAX_EXAMPLES" --seed "$SEED" \
    --workers 2 --request-timeout 60 \
    --suppress-health-check all --no-color \
    --report junit --report-dir "$LOGS/$role" >"$LOGS/$role.log" 2>&1
  rc=$?
  set -e
  tail -n 60 "$LOGS/$role.log"
  took=$(( $(date +%s) - started ))
  cases=$(grep -A1 '^Test cases:' "$LOGS/$role.log" | tail -1 | sed 's/^ *//' || true)
  tested=$(grep -E '^ +Tested: ' "$LOGS/$role.log" | sed 's/^ *//' || true)
  echo "$role: $([ "$rc" -eq 0 ] && echo passed || echo FAILED) in ${took}s; operations $tested; $cases" >>"$summary"
  [ "$rc" -eq 0 ] || status=1
done
if ! curl -fs "$BASE/readyz" >/dev/null; then
  echo "the server stopped answering"; status=1
fi
echo
echo "==> schemathesis summary"
cat "$summary"
exit $status
