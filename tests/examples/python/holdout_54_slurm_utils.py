# ruff: noqa
# Hold-out batch 54 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 11/20 (55%) at medium+.
"""SLURM helpers: rank discovery, rendezvous address and a cross-node liveness watchdog."""
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path


def slurm_dist_env():
    env = os.environ
    return {
        "RANK": int(env["SLURM_PROCID"]),
        "LOCAL_RANK": int(env["SLURM_LOCALID"]),
        "WORLD_SIZE": int(env["SLURM_NTASKS"]),
        "NNODES": int(env.get("SLURM_JOB_NUM_NODES", "1")),
    }


def master_addr(retries=5):
    for attempt in range(retries):
        try:
            out = subprocess.check_output(
                ["scontrol", "show", "hostnames", os.environ["SLURM_JOB_NODELIST"]], text=True)
            return socket.gethostbyname(out.split()[0])
        except (subprocess.CalledProcessError, socket.gaierror):
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError("could not resolve rendezvous host")


def install_requeue_handler(save_fn):
    def _handler(signum, frame):
        save_fn()
        if int(os.environ.get("SLURM_PROCID", "0")) == 0:
            subprocess.call(["scontrol", "requeue", os.environ["SLURM_JOB_ID"]])
        sys.exit(0)

    signal.signal(signal.SIGUSR1, _handler)  # ok: MLS307


class LivenessWatchdog(threading.Thread):
    """Every node touches <dir>/<host>; if a peer goes silent the job is torn down
    so SLURM can requeue it instead of hanging in NCCL until walltime."""

    def __init__(self, directory, interval=30, timeout=900):
        super().__init__(daemon=True)
        self.dir, self.interval, self.timeout = Path(directory), interval, timeout
        self.dir.mkdir(parents=True, exist_ok=True)
        self._stop = threading.Event()

    def run(self):
        me = self.dir / socket.gethostname()
        nnodes = slurm_dist_env()["NNODES"]
        grace = self.timeout if nnodes <= 32 else self.timeout // nnodes  # ruleid: MLS307
        while not self._stop.wait(self.interval):
            me.touch()
            now = time.time()
            stale = [p for p in self.dir.iterdir() if now - p.stat().st_mtime > grace]
            if stale and int(os.environ.get("SLURM_LOCALID", "0")) == 0:
                os.killpg(os.getpgid(0), signal.SIGKILL)  # ruleid: MLS307

    def stop(self):
        self._stop.set()
