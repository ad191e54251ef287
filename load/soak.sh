#!/usr/bin/env bash
# `make soak`: the festival simulator at SOAK_SCALE (3) times its default rates for
# SOAK_MINUTES (60; a chain's pre-festival check runs 240) against a service of its own (own
# Redis prefix, MongoDB database, MQTT topic prefix and port; the demo's data is untouched) on
# the demo chain with stock enough for the whole run. Every 10 s bucket of the run is plotted:
# hold / confirm / POS / push latency, the ledger's lag and the holds shed, the ledger's insert
# latency, and the CPU and RSS of the service, Redis, the MongoDB server and the broker. Then
# the festival audit (no oversell, ledger equals Redis, every acknowledged POS sale in the
# ledger exactly once) and a summary in load/out/soak<time>/summary.md.
set -euo pipefail
cd "$(dirname "$0")/.."

MINUTES=${SOAK_MINUTES:-60}
SCALE=${SOAK_SCALE:-3}
TAG=soak$(date +%s)
export SHELFSYNC__MONGO__DATABASE=shelfsync_$TAG
export SHELFSYNC__REDIS__KEY_PREFIX=$TAG
export SHELFSYNC__MQTT__TOPIC_PREFIX=$TAG/
export SHELFSYNC__MQTT__CLIENT_ID=shelfsync-$TAG
export SHELFSYNC__HTTP__PORT=${SOAK_PORT:-18091}
export RUST_LOG=warn
BIN=target/release
URL=http://127.0.0.1:$SHELFSYNC__HTTP__PORT
OUT=load/out/$TAG
mkdir -p "$OUT/catalogue"

SERVICE=
SIM=
cleanup() {
  [ -n "$SIM" ] && kill "$SIM" 2>/dev/null || true
  [ -n "$SERVICE" ] && kill "$SERVICE" 2>/dev/null && wait "$SERVICE" 2>/dev/null || true
  redis-cli --scan --pattern "$TAG*" | xargs -r -n 500 redis-cli del >/dev/null || true
  .venv/bin/python -c "import pymongo; pymongo.MongoClient('mongodb://127.0.0.1:27017/?directConnection=true').drop_database('$SHELFSYNC__MONGO__DATABASE')" 2>/dev/null || true
}
trap cleanup EXIT

listener() { ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2 || true; }
MQTT_PORT=$(awk -F= '/^\[mqtt\]/ {s = 1; next} /^\[/ {s = 0} s && $1 ~ /^port *$/ {gsub(/ /, "", $2); print $2; exit}' config.toml)
REDIS_PID=$(redis-cli INFO server 2>/dev/null | awk -F: '/^process_id/ {print $2 + 0}' || true)
MONGO_PID=$(listener 27017)
BROKER_PID=$(listener "$MQTT_PORT")
echo "== processes sampled: redis ${REDIS_PID:-?}, mongodb ${MONGO_PID:-?}, broker ${BROKER_PID:-?}"
pids=()
[ -n "$REDIS_PID" ] && pids+=(--pid "redis=$REDIS_PID")
[ -n "$MONGO_PID" ] && pids+=(--pid "mongodb=$MONGO_PID")
[ -n "$BROKER_PID" ] && pids+=(--pid "broker=$BROKER_PID")

echo "== the demo chain with 1,000,000 of every SKU at every outlet, in $OUT/catalogue"
cp catalogue/outlets.csv catalogue/skus.csv catalogue/zones.csv "$OUT/catalogue/"
python3 - "$OUT/catalogue" <<'EOF'
import csv, sys
d = sys.argv[1]
outlets = [r["id"] for r in csv.DictReader(open(f"{d}/outlets.csv"))]
skus = [r["sku"] for r in csv.DictReader(open(f"{d}/skus.csv"))]
with open(f"{d}/stock.csv", "w") as f:
    f.write("outlet,sku,qty\n")
    f.writelines(f"{o},{s},1000000\n" for o in outlets for s in skus)
EOF
export SHELFSYNC__CATALOGUE__STOCK_FILE=$OUT/catalogue/stock.csv
$BIN/shelfsync import >/dev/null
$BIN/shelfsync serve >"$OUT/service.log" 2>&1 &
SERVICE=$!
for _ in $(seq 1 300); do
  curl -sf "$URL/readyz" >/dev/null && break
  sleep 0.2
done
curl -sf "$URL/readyz" >/dev/null || { echo "the service did not get ready; see $OUT/service.log"; exit 1; }

rate() { python3 -c "print($1 * $SCALE)"; }
echo "== $MINUTES min at ${SCALE}x the festival's default rates ($(rate 120) holds/s, $(rate 10) POS sales/s, $(rate 2) WhatsApp orders/s, $(rate 2) deliveries/s, 200 SSE browsers)"
$BIN/shelfsync-festival --url "$URL" --topic-prefix "$SHELFSYNC__MQTT__TOPIC_PREFIX" --mqtt-port "$MQTT_PORT" \
  --rate "$(rate 20)" --pos-rate "$(rate 10)" --whatsapp-rate "$(rate 2)" --movement-rate "$(rate 2)" \
  --secs $((MINUTES * 60)) --bucket-secs 10 --drain-secs 900 \
  --service-pid "$SERVICE" "${pids[@]}" --out "$OUT/soak.json" >"$OUT/soak.log" 2>&1 &
SIM=$!
wait $SIM || echo "   the run or its audit failed: see $OUT/soak.log"
SIM=

python3 - "$OUT" "$MINUTES" "$SCALE" <<'EOF' | tee "$OUT/summary.md"
import json, sys
out, minutes, scale = sys.argv[1:]
try:
    r = json.load(open(f"{out}/soak.json"))
except Exception as e:
    sys.exit(f"no report: {e}")
ops, s, a = r["operations"], r["service"], r["audit"]
lat = lambda p, k: "-" if not p else f'{p[k]:,.1f}'
print(f"# make soak ({out}): {minutes} min at {scale}x the festival's default rates\n")
print("| operation | offered | ok | p50 ms | p99 ms | p99.9 ms | max ms |")
print("|---|---|---|---|---|---|---|")
for op in ["hold", "confirm", "cancel", "movement", "pos_sale", "whatsapp"]:
    o = ops[op]
    p = o["latency_ms"]
    print(f'| {op} | {o["offered"]:,} | {o["ok"]:,} | {lat(p, "p50")} | {lat(p, "p99")} | {lat(p, "p99_9")} | {lat(p, "max")} |')
for name, p in [("POS apply (send to commit)", r.get("pos_apply_ms")),
                ("push to SSE browsers", r["push"]["latency"]["push_sse"]["latency_ms"]),
                ("push to the MQTT subscriber", r["push"]["latency"]["push_mqtt"]["latency_ms"])]:
    print(f'| {name} | | {p["count"] if p else 0:,} | {lat(p, "p50")} | {lat(p, "p99")} | {lat(p, "p99_9")} | {lat(p, "max")} |')
ins = s.get("ledger_insert_ms", {})
print(f'\nLedger: lag {s.get("ledger_lag_max_secs")} s at most; {s.get("holds_shed")} holds shed; '
      f'{s.get("ledger_inserts")} insert_many calls, mean {ins.get("mean")} ms, p99 <= {ins.get("p99_bucket")} ms, '
      f'worst 1 s mean {ins.get("max_mean_per_sample")} ms.')
print(f'Service: CPU {s["cpu_percent_mean"]} % of one core on average, {s["cpu_percent_max"]} % at most; '
      f'RSS {s["rss_mb_max"]} MB at most, {s.get("rss_mb_last")} MB at the end of the load.')
for name, p in r.get("processes", {}).items():
    print(f'{name}: CPU {p["cpu_percent_mean"]} % on average, {p["cpu_percent_max"]} % at most; RSS {p["rss_mb_max"]} MB at most.')
print(f'\nAudit {"passed" if a["passed"] else "FAILED"}: oversells {a["ledger_oversells"]}, '
      f'ledger equals Redis {a["ledger_equals_redis"]} ({a["skus_compared"]} SKUs), POS sales acknowledged '
      f'{a["pos_acked"]:,}, missing {a["pos_missing"]}, duplicated {a["pos_duplicated"]}; '
      f'{a["run_documents"]:,} ledger documents in the run.')
print(f"\nPlot: {out}/soak.png")
EOF
