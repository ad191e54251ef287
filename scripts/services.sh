#!/usr/bin/env bash
# Makes sure Redis, an MQTT broker and a MongoDB wire-protocol server (SecantusDB) are
# installed and running on their usual local ports. Installs what is missing; starts what
# is not running; leaves running services alone. Data of the servers it starts lives in var/.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p var

# The broker's port is the one config.toml names (the project runs a broker of its own there,
# see below); the others are the servers' usual ports.
config_mqtt_port() {
  awk -F= '/^\[mqtt\]/ {s = 1; next} /^\[/ {s = 0} s && $1 ~ /^port *$/ {gsub(/ /, "", $2); print $2; exit}' config.toml
}
REDIS_PORT=${REDIS_PORT:-6379}
MQTT_PORT=${MQTT_PORT:-$(config_mqtt_port)}
MONGO_PORT=${MONGO_PORT:-27017}

say() { printf '[services] %s\n' "$*"; }

listening() { # port
  python3 - "$1" <<'PY'
import socket, sys
s = socket.socket()
s.settimeout(0.5)
sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) == 0 else 1)
PY
}

wait_for() { # name port seconds
  for _ in $(seq 1 $(( $3 * 4 ))); do
    listening "$2" && return 0
    sleep 0.25
  done
  say "$1 did not start on port $2"; return 1
}

apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then
    say "apt-get update"
    apt-get update -qq
    apt_updated=1
  fi
  say "installing $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

command -v python3 >/dev/null || apt_install python3

# Redis
if ! listening "$REDIS_PORT"; then
  command -v redis-server >/dev/null || apt_install redis-server
  say "starting redis-server on $REDIS_PORT"
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir "$PWD/var" --logfile "$PWD/var/redis.log"
  wait_for redis "$REDIS_PORT" 10
fi
command -v redis-cli >/dev/null || apt_install redis-tools

# MQTT 5 broker: always the project's own, configured here, never whatever else listens. A
# broker with Mosquitto's defaults (1000 messages queued per client) silently drops the QoS 1
# POS messages queued for shelfsync past that during a burst or while shelfsync restarts, and
# one without persistence loses what it acknowledged when it restarts.
# The pid of whatever listens on a local TCP port (empty when nothing or unknown).
listener_pid() { ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2 || true; }
broker_is_ours() {
  [ -f var/mosquitto.pid ] && [ "$(listener_pid "$MQTT_PORT")" = "$(cat var/mosquitto.pid)" ]
}
if listening "$MQTT_PORT" && ! broker_is_ours; then
  pid=$(listener_pid "$MQTT_PORT")
  who="another process"
  [ -n "$pid" ] && who="pid $pid ($(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | sed 's/ $//'))"
  say "port $MQTT_PORT is taken by $who, not by the project's broker."
  say "shelfsync needs the broker this script configures there (persistence, max_queued_messages 100000),"
  say "so that no acknowledged POS sale is dropped. Stop that process, or pick another port for both:"
  say "  MQTT_PORT=18830 SHELFSYNC__MQTT__PORT=18830 make run"
  exit 1
fi
if ! listening "$MQTT_PORT"; then
  command -v mosquitto >/dev/null || apt_install mosquitto mosquitto-clients
  say "starting the project's mosquitto on $MQTT_PORT (config var/mosquitto.conf)"
  # A deep queue per session: POS bursts and shelfsync restarts queue up to 100,000 messages.
  # Persistent, so that a broker restart keeps the POS messages it acknowledged but had not
  # yet delivered to shelfsync. `user root`: when started as root, stay able to write var/.
  printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\npersistence true\npersistence_location %s/\npid_file %s/mosquitto.pid\nuser root\n' \
    "$MQTT_PORT" "$PWD/var" "$PWD/var" > var/mosquitto.conf
  mosquitto -d -c "$PWD/var/mosquitto.conf"
  wait_for mosquitto "$MQTT_PORT" 10
  for _ in $(seq 1 20); do broker_is_ours && break; sleep 0.1; done
  broker_is_ours || { say "mosquitto on $MQTT_PORT did not write var/mosquitto.pid"; exit 1; }
fi
command -v mosquitto_sub >/dev/null || apt_install mosquitto-clients

# MongoDB wire protocol: SecantusDB in the project's venv
if [ ! -x .venv/bin/secantusd-py ]; then
  say "installing SecantusDB into .venv"
  python3 -m venv .venv 2>/dev/null || { apt_install python3-venv; rm -rf .venv; python3 -m venv .venv; }
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q SecantusDB
fi
if ! listening "$MONGO_PORT"; then
  say "starting SecantusDB on $MONGO_PORT (data in var/mongo)"
  mkdir -p var/mongo
  # --standalone: drivers then make no retryable writes to it (SecantusDB records every one in
  # a server-wide table that slows every write once it is full) and it keeps no oplog, which
  # shelfsync does not use (no change streams, no transactions).
  nohup .venv/bin/secantusd-py --port "$MONGO_PORT" --storage-path "$PWD/var/mongo" --standalone \
    > var/secantusd.log 2>&1 &
  wait_for secantusdb "$MONGO_PORT" 60
fi
say "redis :$REDIS_PORT, mqtt :$MQTT_PORT, mongodb :$MONGO_PORT are up"
