#!/usr/bin/env bash
# Rebuild and reconciler figures on a large ledger (issue: 6,400 SKUs per outlet, 1,000,000
# documents): rebuild of every outlet without a checkpoint, then with one (plus a tail of
# BENCH_TAIL documents per outlet after it), then the reconciler's pass time in a running
# service. Uses its own MongoDB database and Redis key prefix; the demo's data is untouched.
set -euo pipefail
cd "$(dirname "$0")/.."

export SHELFSYNC__MONGO__DATABASE=${BENCH_DB:-shelfsync_bench}
export SHELFSYNC__REDIS__KEY_PREFIX=${BENCH_PREFIX:-bench}
export SHELFSYNC__MQTT__TOPIC_PREFIX=bench/
export SHELFSYNC__MQTT__CLIENT_ID=shelfsync-bench
export SHELFSYNC__HTTP__PORT=${BENCH_PORT:-18080}
export RUST_LOG=warn
DOCUMENTS=${BENCH_DOCUMENTS:-1000000}
TAIL=${BENCH_TAIL:-1000}
BIN=target/release

wipe_redis() {
  redis-cli --scan --pattern "${SHELFSYNC__REDIS__KEY_PREFIX}:*" | xargs -r -n 500 redis-cli del >/dev/null
}

echo "== seeding $DOCUMENTS ledger documents (6,400 SKUs per outlet) into $SHELFSYNC__MONGO__DATABASE"
$BIN/shelfsync-seed-ledger --fresh --documents "$DOCUMENTS" --skus 6400
wipe_redis

echo "== rebuild without a checkpoint (folds every document; then writes a checkpoint per outlet)"
$BIN/shelfsync rebuild --no-checkpoint

echo "== $TAIL more documents per outlet after the checkpoint"
$BIN/shelfsync-seed-ledger --append "$TAIL"
wipe_redis

echo "== rebuild with a checkpoint (checkpoint + $TAIL-document tail per outlet)"
$BIN/shelfsync rebuild

echo "== one outlet alone, with and without its checkpoint"
wipe_redis
$BIN/shelfsync rebuild --outlet indore-vijay-nagar
wipe_redis
$BIN/shelfsync rebuild --outlet indore-vijay-nagar --no-checkpoint

echo "== reconciler passes in a running service (interval 5 s)"
log=$(mktemp)
SHELFSYNC__RECONCILER__INTERVAL_SECS=5 RUST_LOG=info $BIN/shelfsync serve >"$log" 2>&1 &
pid=$!
sleep 17
kill -TERM $pid; wait $pid || true
grep "reconciler pass" "$log" | sed 's/\x1b\[[0-9;]*m//g'
rm -f "$log"
wipe_redis
