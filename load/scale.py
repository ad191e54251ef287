#!/usr/bin/env python3
"""One process against three on this machine: the same hold/cancel load (shelfsync-load,
closed loop, for SECS seconds at each of CLIENTS concurrencies) against 1, then 3 `shelfsync serve`
processes sharing one port with SO_REUSEPORT (as `make cluster` runs them), each on a fresh
Redis prefix and MongoDB database. Prints each run's holds per second and latency, and the
CPU seconds each process used. On a 2-core machine three processes, Redis, SecantusDB and
the load tool share two cores, and two requests in three take a forwarding hop: this
measures what the hop and the sharing cost, not what three hosts would give.

"other" in the figures is almost all `503` with `Retry-After` from the ledger lag budget
(README, Overload): past what SecantusDB takes, new holds are shed, so accepted holds per
second are the ledger's rate, not the processes'.

Usage: python3 load/scale.py [--secs 20] [--clients 4,64] [--port 18180]   (after
`make build`; Redis, MongoDB and the broker running, as `make services` leaves them)."""

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid

from procs import stop_and_clean

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target/release/shelfsync")
LOAD = os.path.join(ROOT, "target/release/shelfsync-load")
# /readyz names the node and its outlets only to a key that may read metrics.
READYZ_KEY = {"Authorization": "Bearer demo-admin-key-change-me"}


def owned(port, outlets, secs=60):
    """Waits until /readyz of the processes behind `port` together own every outlet."""
    deadline = time.time() + secs
    seen = {}
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/readyz", headers=READYZ_KEY), timeout=1) as r:
                body = json.load(r)
            for o in body.get("owns", []):
                seen[o] = body.get("node")
            if len(seen) == outlets:
                return
        except Exception:
            pass
        time.sleep(0.05)
    sys.exit(f"the outlets were not all owned behind :{port} in {secs} s ({len(seen)})")


def cpu_secs(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(n, clients, args, outlets):
    tag = f"scale{n}" + uuid.uuid4().hex[:8]
    env = dict(os.environ)
    env.update({
        "SHELFSYNC__REDIS__KEY_PREFIX": tag,
        "SHELFSYNC__MONGO__DATABASE": "shelfsync_" + tag,
        "SHELFSYNC__MQTT__TOPIC_PREFIX": tag + "/",
        "SHELFSYNC__HTTP__PORT": str(args.port),
        "SHELFSYNC__HTTP__REUSE_PORT": "true",
        "RUST_LOG": "warn",
    })
    subprocess.run([BIN, "import"], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    procs = []
    try:
        for i in range(n):
            e = dict(env)
            e.update({"SHELFSYNC__CLUSTER__NODE_ID": f"node-{i + 1}",
                      "SHELFSYNC__MQTT__CLIENT_ID": f"shelfsync-{tag}-{i + 1}"})
            procs.append(subprocess.Popen([BIN, "serve"], cwd=ROOT, env=e,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        owned(args.port, outlets)
        time.sleep(2 * n)  # let ownership settle where rendezvous puts it
        before = [cpu_secs(p.pid) for p in procs]
        out = subprocess.run([LOAD, "--url", f"http://127.0.0.1:{args.port}",
                              "--secs", str(args.secs), "--clients", str(clients)],
                             capture_output=True, text=True, check=True).stdout
        cpu = [cpu_secs(p.pid) - b for p, b in zip(procs, before)]
        lines = [l for l in out.splitlines() if l.startswith(("holds", "hold latency"))]
        print(f"{n} process{'es' if n > 1 else ''}, {clients} clients: " + "; ".join(lines)
              + f"; CPU s per process {', '.join(f'{c:.1f}' for c in cpu)}", flush=True)
    finally:
        stop_and_clean(list(procs), tag)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--secs", type=int, default=20)
    ap.add_argument("--clients", default="4,64")
    ap.add_argument("--port", type=int, default=18180)
    args = ap.parse_args()
    outlets = sum(1 for _ in open(os.path.join(ROOT, "catalogue/outlets.csv"))) - 1
    print(f"hold/cancel, {args.secs} s a run, on {os.cpu_count()} cores; Redis, SecantusDB, "
          "the broker and the load tool on the same machine", flush=True)
    for clients in (int(c) for c in args.clients.split(",")):
        for n in (1, 3):
            run(n, clients, args, outlets)


if __name__ == "__main__":
    main()
