#!/usr/bin/env bash
# `make cluster`: three `shelfsync serve` processes on this machine behind one port
# (http.port of config.toml, 8080), sharing it with SO_REUSEPORT (http.reuse_port): the
# kernel spreads new connections over them, and each forwards what it does not own to the
# owner on a port of its own. Logs in var/cluster/node-N.log. Ctrl-C (or SIGTERM) stops all
# three gracefully: each hands its outlets over and writes its ledger before it exits.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/shelfsync}
N=${CLUSTER_PROCESSES:-3}
mkdir -p var/cluster
pids=()

stop() {
  trap - INT TERM EXIT
  echo "[cluster] stopping ${pids[*]:-nothing}"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  echo "[cluster] stopped"
}
trap 'stop; exit 0' INT TERM
trap stop EXIT

for i in $(seq 1 "$N"); do
  SHELFSYNC__CLUSTER__NODE_ID="node-$i" \
  SHELFSYNC__MQTT__CLIENT_ID="shelfsync-node-$i" \
  SHELFSYNC__HTTP__REUSE_PORT=true \
    "$BIN" serve >"var/cluster/node-$i.log" 2>&1 &
  pids+=("$!")
  echo "[cluster] node-$i: pid $!, log var/cluster/node-$i.log"
done

port=$(sed -n '/^\[http\]/,/^\[/s/^port *= *//p' config.toml | head -1)
# Ready when every process owns its share: /readyz of whichever process answers lists the
# outlets that one owns; the members' names come from any of them.
for _ in $(seq 1 120); do
  owned=0
  for i in $(seq 1 "$N"); do
    grep -q 'core started' "var/cluster/node-$i.log" && owned=$((owned + 1))
  done
  [ "$owned" -eq "$N" ] && break
  for pid in "${pids[@]}"; do
    kill -0 "$pid" 2>/dev/null || { echo "[cluster] a process exited; see var/cluster/"; exit 1; }
  done
  sleep 0.5
done
echo "[cluster] $N processes behind :$port (try: curl -s -H 'Authorization: Bearer demo-viewer-key-change-me' localhost:$port/readyz; several times)"
wait -n "${pids[@]}" || true
echo "[cluster] a process exited; stopping the others"
