#!/usr/bin/env bash
# The catalogue at chain scale (`make bench-catalogue`, and the `catalogue` part of `make
# bench`): a whole-chain count of 13 outlets x 6,400 SKUs sent with `shelfsync import
# --counts` (then the same sheet again, all replays), and the export of a 1,000,000-document
# ledger (`shelfsync-seed-ledger`), every outlet as CSV through `shelfsync export`, with the
# service's RSS sampled every 100 ms during it. Uses its own MongoDB database, Redis prefix and
# port; the demo's data is untouched. Prints the figures and writes them to $OUT/catalogue.md.
set -euo pipefail
cd "$(dirname "$0")/.."

TAG=benchcat$(date +%s)
export SHELFSYNC__MONGO__DATABASE=shelfsync_$TAG
export SHELFSYNC__REDIS__KEY_PREFIX=$TAG
export SHELFSYNC__MQTT__TOPIC_PREFIX=$TAG/
export SHELFSYNC__MQTT__CLIENT_ID=shelfsync-$TAG
export SHELFSYNC__HTTP__PORT=${BENCH_PORT:-18091}
export RUST_LOG=warn
export SHELFSYNC_API_KEY=demo-admin-key-change-me
SKUS=${SKUS:-6400}
DOCUMENTS=${BENCH_DOCUMENTS:-1000000}
BIN=target/release
URL=http://127.0.0.1:$SHELFSYNC__HTTP__PORT
OUT=${OUT:-load/out/$TAG}
mkdir -p "$OUT/catalogue"

SERVICE=
cleanup() {
  [ -n "$SERVICE" ] && kill "$SERVICE" 2>/dev/null && wait "$SERVICE" 2>/dev/null || true
  redis-cli --scan --pattern "$TAG*" | xargs -r -n 500 redis-cli del >/dev/null || true
  .venv/bin/python -c "import pymongo; pymongo.MongoClient('mongodb://127.0.0.1:27017/?directConnection=true').drop_database('$SHELFSYNC__MONGO__DATABASE')" 2>/dev/null || true
}
trap cleanup EXIT

now() { date +%s.%N; }
since() { python3 -c "print(f'{$(now) - $1:.1f}')"; }
rss_mb() { awk '/VmRSS/ {printf "%.1f", $2 * 1024 / 1e6}' "/proc/$1/status"; }

serve() {
  $BIN/shelfsync serve >>"$OUT/service.log" 2>&1 &
  SERVICE=$!
  for _ in $(seq 1 1500); do
    curl -sf "$URL/readyz" >/dev/null && return 0
    sleep 0.2
  done
  echo "the service did not get ready; see $OUT/service.log"
  exit 1
}
stop() {
  kill -TERM "$SERVICE"
  wait "$SERVICE" || true
  SERVICE=
}

echo "== a chain of 13 outlets x $SKUS SKUs in $OUT/catalogue"
cp catalogue/outlets.csv catalogue/zones.csv "$OUT/catalogue/"
python3 - "$OUT/catalogue" "$SKUS" <<'EOF'
import csv, sys
d, n = sys.argv[1], int(sys.argv[2])
outlets = [r["id"] for r in csv.DictReader(open(f"{d}/outlets.csv"))]
with open(f"{d}/skus.csv", "w") as f:
    f.write("sku,name,category\n")
    f.writelines(f"bench-{i:05},Bench item {i} 500 g,sweets\n" for i in range(n))
with open(f"{d}/stock.csv", "w") as f:
    f.write("outlet,sku,qty\n")
with open(f"{d}/counts.csv", "w") as f:
    f.write("outlet,sku,qty\n")
    f.writelines(f"{o},bench-{i:05},{(i * 7) % 500}\n" for o in outlets for i in range(n))
EOF
export SHELFSYNC__CATALOGUE__SKUS_FILE=$OUT/catalogue/skus.csv
export SHELFSYNC__CATALOGUE__STOCK_FILE=$OUT/catalogue/stock.csv
lines=$(($(wc -l <"$OUT/catalogue/counts.csv") - 1))

echo "== whole-chain count: $lines lines, one request per outlet ($SKUS lines)"
serve
at=$(date -u +%Y-%m-%dT%H:%M:%SZ)
t=$(now)
$BIN/shelfsync import --counts "$OUT/catalogue/counts.csv" --at "$at" --chunk "$SKUS" --url "$URL" | tee "$OUT/count-1.txt"
count_secs=$(since "$t")
t=$(now)
$BIN/shelfsync import --counts "$OUT/catalogue/counts.csv" --at "$at" --chunk "$SKUS" --url "$URL" | tee "$OUT/count-2.txt"
again_secs=$(since "$t")
count_rss=$(rss_mb "$SERVICE")
echo "   first: $count_secs s; again (all replays): $again_secs s; service RSS after: $count_rss MB"
stop

echo "== seeding $DOCUMENTS ledger documents (13 outlets x $SKUS SKUs) into $SHELFSYNC__MONGO__DATABASE"
redis-cli --scan --pattern "$TAG*" | xargs -r -n 500 redis-cli del >/dev/null || true
t=$(now)
$BIN/shelfsync-seed-ledger --fresh --documents "$DOCUMENTS" --skus "$SKUS"
echo "   seeded in $(since "$t") s"
echo "== Redis rebuilt from that ledger (shelfsync rebuild), then the service started"
t=$(now)
$BIN/shelfsync rebuild >"$OUT/rebuild.txt"
serve
echo "   ready in $(since "$t") s"
idle_rss=$(rss_mb "$SERVICE")
peak_file=$OUT/export-rss.txt
( while kill -0 "$SERVICE" 2>/dev/null; do rss_mb "$SERVICE"; echo; sleep 0.1; done ) >"$peak_file" 2>/dev/null &
SAMPLER=$!
echo "== export of every outlet's ledger as CSV (service RSS at rest: $idle_rss MB)"
outlets=$(python3 -c "import csv; print(' '.join(r['id'] for r in csv.DictReader(open('$OUT/catalogue/outlets.csv'))))")
t=$(now)
rows=0
for o in $outlets; do
  n=$($BIN/shelfsync export ledger --outlet "$o" --format csv --out "$OUT/ledger-$o.csv" --url "$URL" 2>&1 | grep -o 'exported [0-9]* rows' | awk '{print $2}')
  rows=$((rows + n))
done
export_secs=$(since "$t")
kill "$SAMPLER" 2>/dev/null || true
peak_rss=$(sort -n "$peak_file" | tail -1)
bytes=$(cat "$OUT"/ledger-*.csv | wc -c)
docs=$(for f in "$OUT"/ledger-*.csv; do tail -n +2 "$f" | cut -d, -f2 | uniq | wc -l; done | awk '{s += $1} END {print s}')
rm -f "$OUT"/ledger-*.csv
echo "   $docs documents ($rows CSV rows, $((bytes / 1000000)) MB) in $export_secs s; service RSS at rest $idle_rss MB, at most $peak_rss MB during the export"
stop

cat >"$OUT/catalogue.md" <<EOF
| run | result |
| --- | --- |
| whole-chain count, 13 x $SKUS = $lines lines (\`shelfsync import --counts\`, $SKUS lines per request) | $count_secs s |
| the same sheet again (every line a replay) | $again_secs s |
| export of a $DOCUMENTS-document ledger, 13 outlets as CSV (\`shelfsync export ledger\`, one after another) | $export_secs s: $docs documents, $rows rows, $((bytes / 1000000)) MB |
| service RSS during that export | $idle_rss MB at rest, $peak_rss MB at most |
EOF
cat "$OUT/catalogue.md"
