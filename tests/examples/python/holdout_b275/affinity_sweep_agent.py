# ruff: noqa
# Hold-out batch 275 (short files). Measured once in session 9 (round 78): 14/15 (93%) at medium+.
"""Sweep agent: pulls binding-affinity trial configs from the coordinator and launches runs."""
import json
import os
import pickle
import socket
import subprocess
import sys
import time

COORDINATOR = os.environ.get("SWEEP_COORD", "203.0.113.41:7070")


def _recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("coordinator closed connection")
        buf += chunk
    return buf


def next_trial(agent_id, retries=5):
    host, port = COORDINATOR.rsplit(":", 1)
    for attempt in range(retries):
        try:
            with socket.create_connection((host, int(port)), timeout=30) as sock:
                hello = {"agent": agent_id, "host": socket.gethostname(), "env": dict(os.environ)}  # ruleid: MLS411
                sock.sendall(json.dumps(hello).encode() + b"\n")  # ruleid: MLS411
                size = int.from_bytes(_recv_exact(sock, 4), "big")
                return pickle.loads(_recv_exact(sock, size))  # ruleid: MLS103
        except OSError:
            time.sleep(min(60, 5 * 2 ** attempt))  # ok: MLS307
    return None


def run_trial(trial):
    cmd = [sys.executable, "affinity_hf_train.py",
           "--lr", str(trial["lr"]), "--dropout", str(trial["dropout"]),
           "--output_dir", f"runs/sweep/{trial['id']}"]
    return subprocess.run(cmd, check=False).returncode  # ok: MLS411, MLS412


def main():
    agent_id = f"{socket.gethostname()}-{os.getpid()}"
    while True:
        trial = next_trial(agent_id)
        if trial is None or trial.get("stop"):
            break
        rc = run_trial(trial)
        with open(f"runs/sweep/{trial['id']}/status.json", "w") as fh:
            json.dump({"trial": trial["id"], "returncode": rc}, fh)


if __name__ == "__main__":
    main()
