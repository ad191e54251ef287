#!/usr/bin/env bash
# `make bench`: the hold-rate sweep. Starts its own shelfsync (own Redis prefix, MongoDB
# database, MQTT topic prefix and port; the demo's data is untouched), imports the demo chain,
# then runs the festival simulator at each rate of RATES (holds/s, open-loop, for SECS s each;
# every hold is cancelled after a short think time so stock is not used up) and prints a table
# with the highest rate whose hold p99 stayed within P99_MS. In the same run, redis-benchmark
# measures the equivalent Lua check-and-hold on this Redis as the ceiling, and the ratio is
# printed. Each run's JSON report stays under load/out/.
set -euo pipefail
cd "$(dirname "$0")/.."

RATES=${RATES:-"1000 2000 5000 10000 20000"}
SECS=${SECS:-10}
P99_MS=${P99_MS:-10}
TAG=bench$(date +%s)
export SHELFSYNC__MONGO__DATABASE=shelfsync_$TAG
export SHELFSYNC__REDIS__KEY_PREFIX=$TAG
export SHELFSYNC__MQTT__TOPIC_PREFIX=$TAG/
export SHELFSYNC__MQTT__CLIENT_ID=shelfsync-$TAG
export SHELFSYNC__HTTP__PORT=${BENCH_PORT:-18090}
export RUST_LOG=warn
BIN=target/release
URL=http://127.0.0.1:$SHELFSYNC__HTTP__PORT
OUT=load/out/$TAG
mkdir -p "$OUT"

SERVICE=
cleanup() {
  [ -n "$SERVICE" ] && kill "$SERVICE" 2>/dev/null && wait "$SERVICE" 2>/dev/null || true
  redis-cli --scan --pattern "$TAG*" | xargs -r -n 500 redis-cli del >/dev/null || true
  .venv/bin/python -c "import pymongo; pymongo.MongoClient('mongodb://127.0.0.1:27017/?directConnection=true').drop_database('$SHELFSYNC__MONGO__DATABASE')" 2>/dev/null || true
}
trap cleanup EXIT

echo "== importing the demo chain into $SHELFSYNC__MONGO__DATABASE"
$BIN/shelfsync import >/dev/null
$BIN/shelfsync serve >"$OUT/service.log" 2>&1 &
SERVICE=$!
for _ in $(seq 1 100); do
  curl -sf "$URL/readyz" >/dev/null && break
  sleep 0.2
done
curl -sf "$URL/readyz" >/dev/null || { echo "the service did not get ready; see $OUT/service.log"; exit 1; }

rows=()
for rate in $RATES; do
  echo "== $rate holds/s for $SECS s"
  report=$OUT/holds-$rate.json
  if ! $BIN/shelfsync-festival --url "$URL" --topic-prefix "$SHELFSYNC__MQTT__TOPIC_PREFIX" \
      --rate "$rate" --spike 1 --secs "$SECS" --skus 200 --pos-rate 0 --whatsapp-rate 0 \
      --confirm-share 0 --cancel-share 1 --think-ms 50 --inflight-max 20000 \
      --out "$report" >"$OUT/holds-$rate.log" 2>&1; then
    echo "   the run or its audit failed: see $OUT/holds-$rate.log"
  fi
  rss=$(ps -o rss= -p "$SERVICE" | tr -d ' ')
  rows+=("$(python3 - "$report" "$rate" "$rss" <<'EOF'
import json, sys
path, rate, rss = sys.argv[1], sys.argv[2], sys.argv[3]
try:
    r = json.load(open(path))
except Exception:
    print(f"{rate} - - - - - - failed")
    sys.exit()
h = r["operations"]["hold"]
l = h["latency_ms"]
audit = "passed" if r["audit"]["passed"] else "FAILED"
print(f'{rate} {h["achieved_per_sec"]:.0f} {h.get("client_overload", 0)} {l["p50"]} {l["p99"]} {l["max"]} {int(rss) // 1024} {audit}')
EOF
)")
done

echo "== redis-benchmark: the Lua check-and-hold alone (the ceiling)"
LUA="local a = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0') - tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0') if a >= 1 then redis.call('HINCRBY', KEYS[2], ARGV[1], 1) redis.call('HINCRBY', KEYS[2], ARGV[1], -1) return 1 end return 0"
redis-cli HSET "$TAG:lua:{o}:on_hand" sku 1000000 >/dev/null
ceiling=$(redis-benchmark -n 200000 -c 50 -q EVAL "$LUA" 2 "$TAG:lua:{o}:on_hand" "$TAG:lua:{o}:reserved" sku \
  | tr '\r' '\n' | awk '/requests per second/ {for (i = 1; i <= NF; i++) if ($(i+1) == "requests") v = $i} END {print v}')
echo "   $ceiling EVALs/s"

echo
printf '%-10s %-10s %-10s %-8s %-8s %-8s %-8s %s\n' offered/s held/s overload p50_ms p99_ms max_ms rss_mb audit
best=0
for row in "${rows[@]}"; do
  read -r rate achieved overload p50 p99 max rss audit <<<"$row"
  printf '%-10s %-10s %-10s %-8s %-8s %-8s %-8s %s\n' "$rate" "$achieved" "$overload" "$p50" "$p99" "$max" "$rss" "$audit"
  if [ "$audit" = passed ] && [ "$overload" = 0 ] && python3 -c "import sys; sys.exit(0 if float('$p99') <= $P99_MS else 1)"; then
    best=$rate
  fi
done
echo
echo "highest offered rate with hold p99 <= $P99_MS ms (no client overload, audit passed): $best holds/s"
echo "redis-benchmark Lua check-and-hold ceiling: $ceiling/s"
python3 -c "c = float('${ceiling:-0}' or 0); b = $best; print(f'ratio: {b / c:.3f}' if c else 'ratio: n/a')"
echo "reports: $OUT"
