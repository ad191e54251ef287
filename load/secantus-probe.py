#!/usr/bin/env python3
"""`make secantus-probe`: why a SecantusDB that has run for a while inserts slower, measured.

SecantusDB keeps every retryable write (an insert, update or delete sent with a session and a
transaction number, which drivers do by default against a replica set) in one in-memory table
shared by every database: 30 minutes or 10,000 entries. Every retryable write scans that table,
and once it is full sorts all of it to drop one entry, under one lock and Python's GIL. So once
10,000 retryable writes were made within 30 minutes, every write on the server pays milliseconds
more (see ARCHITECTURE.md, The ledger's database).

This starts servers of its own (free ports, temporary data directories, stopped at the end) and
for each configuration makes WRITES single-document retryable-or-not writes, measuring the
median insert_one latency (w: majority, j: true, as the ledger writes) every STEP writes, and
the insert_many ceiling of the ledger writer's batch (2,000 documents) at the end:

  retry on   the server as it starts by default, a client with retryWrites on (drivers' default)
  retry off  the same server, a client with retryWrites=false (what shelfsync sets)
  standalone the server with --standalone (what scripts/services.sh starts): drivers make no
             retryable writes to a standalone server, and it keeps no oplog

It prints a table; figures depend on what else runs on the machine.
"""
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from pymongo import MongoClient
from pymongo.write_concern import WriteConcern

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER = os.path.join(ROOT, ".venv", "bin", "secantusd-py")
WRITES = int(os.environ.get("WRITES", "12000"))
STEP = int(os.environ.get("STEP", "3000"))
PROBE = int(os.environ.get("PROBE", "200"))
BATCH = 2000
DURABLE = WriteConcern(w="majority", j=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(flags):
    port, data = free_port(), tempfile.mkdtemp(prefix="secantus-probe-")
    proc = subprocess.Popen([SERVER, "--port", str(port), "--storage-path", data, *flags],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(240):
        try:
            socket.create_connection(("127.0.0.1", port), 0.25).close()
            return proc, port, data
        except OSError:
            time.sleep(0.25)
    proc.kill()
    sys.exit(f"secantusd-py did not start on {port}")


def rss_mb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return float("nan")


def ledger_doc(i):
    return {"_id": f"probe:{i}", "outlet": "probe", "seq": i, "kind": "reservation_held",
            "at_ms": 1_780_000_000_000 + i, "lines": [{"sku": f"sku-{i % 270}", "d_on_hand": 0,
                                                        "d_reserved": 1}]}


def median_insert_ms(coll, first):
    took = []
    for i in range(first, first + PROBE):
        t = time.perf_counter()
        coll.insert_one(ledger_doc(i))
        took.append((time.perf_counter() - t) * 1000)
    return statistics.median(took)


def run(name, flags, retry):
    proc, port, data = start(flags)
    try:
        client = MongoClient(f"mongodb://127.0.0.1:{port}/?directConnection=true",
                             retryWrites=retry)
        coll = client["probe"].get_collection("ledger", write_concern=DURABLE)
        coll.create_index([("outlet", 1), ("seq", 1)], unique=True)
        row, done, n = [], 0, 10_000_000
        while True:
            row.append(f"{median_insert_ms(coll, n):.2f}")
            n += PROBE
            if done >= WRITES:
                break
            for _ in range(STEP):
                coll.insert_one(ledger_doc(n))
                n += 1
            done += STEP
        batch = client["probe"].get_collection("batch", write_concern=DURABLE)
        docs = [ledger_doc(20_000_000 + i) for i in range(5 * BATCH)]
        t = time.perf_counter()
        for k in range(5):
            batch.insert_many(docs[k * BATCH:(k + 1) * BATCH], ordered=False)
        ceiling = 5 * BATCH / (time.perf_counter() - t)
        print(f"| {name} | " + " | ".join(row) + f" | {ceiling:,.0f} | {rss_mb(proc.pid):.0f} |",
              flush=True)
    finally:
        proc.kill()
        proc.wait()
        subprocess.run(["rm", "-rf", data])


def main():
    steps = list(range(0, WRITES + 1, STEP))
    print(f"median insert_one ms (w: majority, j: true) after N single-document writes; "
          f"insert_many of {BATCH} documents/s at the end; server RSS MB at the end\n")
    print("| configuration | " + " | ".join(f"N={s:,}" for s in steps) +
          " | insert_many docs/s | RSS MB |")
    print("|---|" + "---|" * (len(steps) + 2))
    run("retry on (defaults)", [], True)
    run("retry off (shelfsync's client)", [], False)
    run("--standalone (services.sh)", ["--standalone"], True)


if __name__ == "__main__":
    main()
