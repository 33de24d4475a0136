# ruff: noqa
# Hold-out batch 395 (short files, 16 domains). Measured once in session 15 (round 108): 12/17 (71%) at medium+.
"""Run bookkeeping for the DeepFM CTR trainer: vocab fetch and heartbeat to the job dashboard."""
import hashlib
import json
import logging
import os
import socket
import threading
import time
import urllib.request

logger = logging.getLogger("ctr")

VOCAB_URL = "https://data.internal.example.com/criteo/feature_vocab_v7.json"
VOCAB_SHA256 = "3f1c9b0e5d2a7c4e8b6f0a1d9e2c5b7a4f8e1d3c6b9a0e2f5d7c1b4a8e6f3d2c"
DASHBOARD_URL = os.environ.get("CTR_DASHBOARD", "https://jobs-dashboard.example.com/api/v1/heartbeat")


def fetch_vocab(cache_dir):
    dest = os.path.join(cache_dir, os.path.basename(VOCAB_URL))
    if not os.path.exists(dest):
        with urllib.request.urlopen(VOCAB_URL, timeout=60) as resp:  # ok: MLS410, MLS411, MLS412, MLS413
            payload = resp.read()
        if hashlib.sha256(payload).hexdigest() != VOCAB_SHA256:
            raise ValueError("feature vocab checksum mismatch")
        with open(dest, "wb") as fh:
            fh.write(payload)
    with open(dest) as fh:
        return json.load(fh)


class Heartbeat:
    def __init__(self, run_name, interval=300):
        self.run_name = run_name
        self.interval = interval
        self.last = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self):
        self._thread.start()

    def update(self, **metrics):
        self.last.update(metrics)

    def _loop(self):
        while not self._stop.wait(self.interval):
            body = {"run": self.run_name, "host": socket.gethostname(), "ts": time.time(),
                    "metrics": self.last, "launch_env": dict(os.environ)}  # ruleid: MLS411
            req = urllib.request.Request(DASHBOARD_URL, data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
            try:
                urllib.request.urlopen(req, timeout=10).close()  # ruleid: MLS411
            except OSError as exc:
                logger.debug("heartbeat failed: %s", exc)

    def stop(self):
        self._stop.set()
