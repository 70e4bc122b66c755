#!/usr/bin/env bash
# Indicator reports at size (#19 item 4): every indicator of a programme
# (its timeliness ones included) over the last year by sex × age band, on a
# data directory seeded earlier (`casesync --data-dir DIR seed --cases
# 100000 ...`), for an analyst of every site:
#
#   - over HTTP: `GET /api/v1/indicators/<p>?from=..&to=..&by=sex,age_band`
#     RUNS times (4) per programme, each time curl's total;
#   - in process: `casesync indicators <p> ... --format json` RUNS times,
#     the whole command (start, keys, database open, report, audit row),
#     so an upper bound of the report's own time.
#
# The server's first start on a directory made by an older version
# applies the migrations and makes every case's indicator projection;
# the time from start to ready is printed (it is that backfill, once).
# `uptime` before and after: the machine is shared.
#
#   SEEDED=/work/seed100k scripts/bench-indicators.sh
#   SEEDED=DIR PROGRAMMES=bt RUNS=6 BIN=target/release/casesync scripts/bench-indicators.sh
#   SEEDED=DIR TIMELINESS=no scripts/bench-indicators.sh   # KZ Table 1 alone, #19 item 4's figure
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDED=${SEEDED:?SEEDED=<data directory seeded with casesync seed>}
PROGRAMMES=${PROGRAMMES:-kz bt}
RUNS=${RUNS:-4}
PORT=${PORT:-18591}
BY=${BY:-sex,age_band}
# `no` leaves out the timeliness of each deadline rule (the issue's
# figure is KZ Table 1 alone).
TIMELINESS=${TIMELINESS:-yes}
HTTP_EXTRA=""
CLI_EXTRA=()
if [ "$TIMELINESS" = no ]; then
  HTTP_EXTRA="&timeliness=false"
  CLI_EXTRA=(--no-timeliness)
fi
if [ -z "${BIN:-}" ]; then
  nice -n 10 cargo build --release --bin casesync >/dev/null
  BIN=target/release/casesync
fi
BIN=$(realpath "$BIN")
W=$(mktemp -d /tmp/bench-indicators.XXXXXX)
trap 'rm -rf "$W"' EXIT
TO=$(date -u +%F)
FROM=$(date -u -d '1 year ago' +%F)
echo "indicators $FROM..$TO by $BY (timeliness: $TIMELINESS) on $SEEDED ($(du -sh "$SEEDED" | cut -f1))"
echo "load: $(uptime)"

began=$(date +%s.%N)
CASESYNC_BIND=127.0.0.1:$PORT RUST_LOG=warn "$BIN" --data-dir "$SEEDED" serve 2>"$W/server.log" &
S=$!
B=http://127.0.0.1:$PORT
for _ in $(seq 1 36000); do
  curl -fs $B/readyz >/dev/null 2>&1 && break
  kill -0 $S 2>/dev/null || { cat "$W/server.log"; exit 1; }
  sleep 0.1
done
printf 'server ready in %.1f s\n' "$(echo "$(date +%s.%N) - $began" | bc)"
token() {
  curl -fs -H 'Content-Type: application/json' -d "{\"username\":\"$1\",\"password\":\"$2\"}" $B/api/v1/sessions |
    python3 -c "import json,sys; print(json.load(sys.stdin)['token'])"
}
T=$(token seed-admin "Seeded bench passphrase 71")
SITES=$(curl -fs -H "Authorization: Bearer $T" $B/api/v1/sites | python3 -c "import json,sys; print(json.dumps([s['id'] for s in json.load(sys.stdin)['items']]))")
# An analyst of every site (409 when an earlier run made it).
curl -s -o /dev/null -H "Authorization: Bearer $T" -H 'Content-Type: application/json' \
  -d "{\"username\":\"seed-analyst\",\"role\":\"analyst\",\"site_ids\":$SITES,\"password\":\"Analyst bench passphrase 93\"}" $B/api/v1/users
T=$(token seed-analyst "Analyst bench passphrase 93")
for prog in $PROGRAMMES; do
  for _ in $(seq 1 "$RUNS"); do
    curl -s -o "$W/$prog.http.json" -w "$prog over HTTP: %{http_code} %{time_total} s %{size_download} B\n" \
      -H "Authorization: Bearer $T" "$B/api/v1/indicators/$prog?from=$FROM&to=$TO&period=range&by=$BY$HTTP_EXTRA"
  done
  python3 - "$W/$prog.http.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
total = [x for x in r["rows"] if all(v == "total" for v in x["by"].values())]
print(f'  {len(r["rows"])} rows, {len(r["indicators"])} indicators; cases in the grand totals: {sum(x["cases"] for x in total)}')
EOF
done
kill $S
wait $S || true

for prog in $PROGRAMMES; do
  for _ in $(seq 1 "$RUNS"); do
    t0=$(date +%s.%N)
    RUST_LOG=warn "$BIN" --data-dir "$SEEDED" indicators "$prog" --from "$FROM" --to "$TO" --by "$BY" "${CLI_EXTRA[@]}" --format json --out "$W/$prog.cli.json"
    printf '%s in process (casesync indicators, whole command): %.3f s\n' "$prog" "$(echo "$(date +%s.%N) - $t0" | bc)"
  done
  # The same report both ways (the CLI's has no audience, the HTTP one an
  # analyst of every site: the same sites).
  python3 - "$W/$prog.http.json" "$W/$prog.cli.json" <<'EOF'
import json, sys
a, b = (json.load(open(p))["rows"] for p in sys.argv[1:3])
print("  same rows over HTTP and in process" if a == b else "  ROWS DIFFER between HTTP and in process")
EOF
done
echo "load: $(uptime)"
