"""What the Python load tools (failover.py, scale.py) share: stopping the `shelfsync serve`
processes they started, and removing the Redis keys and MongoDB database of their prefix."""

import os
import signal
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def stop_and_clean(procs, tag):
    """SIGTERM to every process still running (a graceful stop), SIGKILL to one that takes
    over 60 s; then the keys under `tag` and the database `shelfsync_{tag}` go."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
    keys = subprocess.run(["redis-cli", "--scan", "--pattern", tag + "*"],
                          capture_output=True, text=True).stdout.split()
    for i in range(0, len(keys), 500):
        subprocess.run(["redis-cli", "del", *keys[i:i + 500]], stdout=subprocess.DEVNULL)
    subprocess.run([os.path.join(ROOT, ".venv/bin/python"), "-c",
                    "import pymongo; pymongo.MongoClient('mongodb://127.0.0.1:27017/"
                    f"?directConnection=true').drop_database('shelfsync_{tag}')"],
                   stderr=subprocess.DEVNULL)
