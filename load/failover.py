#!/usr/bin/env python3
"""Failover gap: three `shelfsync serve` processes on one Redis prefix; kill -9 the one
that owns the most outlets, time until the other two own every outlet again (polling
their /readyz every 20 ms), restart it under the same node id, let ownership settle;
KILLS times. Prints each gap and p50 / max. No load runs meanwhile: this measures the
lease and the rounds, not a busy machine.

Usage: python3 load/failover.py [--kills 10] [--lease-ms 6000]   (after `make build`;
Redis, MongoDB and the broker running, as `make services` leaves them)."""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid

from procs import stop_and_clean

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target/release/shelfsync")
# /readyz names the node and its outlets only to a key that may read metrics.
READYZ_KEY = {"Authorization": "Bearer demo-admin-key-change-me"}


def readyz(port):
    try:
        with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/readyz", headers=READYZ_KEY), timeout=1) as r:
            return json.load(r)
    except Exception as e:  # a 503 still has the body
        body = getattr(e, "read", None)
        try:
            return json.loads(body()) if body else None
        except Exception:
            return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--lease-ms", type=int, default=6000)
    ap.add_argument("--base-port", type=int, default=18101)
    args = ap.parse_args()
    tag = "failover" + uuid.uuid4().hex[:8]
    env = dict(os.environ)
    env.update({
        "SHELFSYNC__REDIS__KEY_PREFIX": tag,
        "SHELFSYNC__MONGO__DATABASE": "shelfsync_" + tag,
        "SHELFSYNC__MQTT__TOPIC_PREFIX": tag + "/",
        "SHELFSYNC__CLUSTER__LEASE_MS": str(args.lease_ms),
        "RUST_LOG": "warn",
    })
    subprocess.run([BIN, "import"], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    outlets = sum(1 for _ in open(os.path.join(ROOT, "catalogue/outlets.csv"))) - 1
    names = ["a", "b", "c"]
    ports = {n: args.base_port + i for i, n in enumerate(names)}
    procs = {}

    def start(n):
        e = dict(env)
        e.update({
            "SHELFSYNC__HTTP__PORT": str(ports[n]),
            "SHELFSYNC__CLUSTER__NODE_ID": n,
            "SHELFSYNC__MQTT__CLIENT_ID": f"shelfsync-{tag}-{n}",
        })
        procs[n] = subprocess.Popen([BIN, "serve"], cwd=ROOT, env=e,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def owners(live):
        seen = {}
        for n in live:
            body = readyz(ports[n]) or {}
            for o in body.get("owns", []):
                if o in seen:
                    return None
                seen[o] = n
        return seen

    def settle(live, secs=60):
        deadline = time.time() + secs
        while time.time() < deadline:
            seen = owners(live)
            if seen and len(seen) == outlets and all(n in seen.values() for n in live):
                return seen
            time.sleep(0.05)
        sys.exit(f"ownership did not settle over {live} in {secs} s")

    gaps = []
    try:
        for n in names:
            start(n)
        seen = settle(names)
        for k in range(args.kills):
            count = {n: list(seen.values()).count(n) for n in names}
            victim = max(names, key=lambda n: count[n])
            survivors = [n for n in names if n != victim]
            t0 = time.monotonic()
            procs[victim].send_signal(signal.SIGKILL)
            procs[victim].wait()
            while True:
                s = owners(survivors)
                if s and len(s) == outlets:
                    break
                time.sleep(0.02)
            gap = time.monotonic() - t0
            gaps.append(gap)
            print(f"kill {k + 1}: {victim} owned {count[victim]} outlets; owned again after {gap * 1000:.0f} ms")
            start(victim)
            seen = settle(names)
    finally:
        stop_and_clean(list(procs.values()), tag)
    if gaps:
        ms = sorted(g * 1000 for g in gaps)
        print(f"failover gap over {len(ms)} kills (lease {args.lease_ms} ms, renewed every "
              f"{args.lease_ms // 3} ms): p50 {statistics.median(ms):.0f} ms, "
              f"max {ms[-1]:.0f} ms, min {ms[0]:.0f} ms")


if __name__ == "__main__":
    main()
