# ruff: noqa
# Hold-out batch 88 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 15/17 (88%) at medium+.
"""SLURM preemption handling + small download helper used by the data prep scripts."""
import os
import signal
import subprocess
import sys
import time
import urllib.request


class PreemptionHandler:
    """On SIGTERM / SIGUSR1 (sent by `--signal=B:USR1@120`), checkpoint, requeue, exit."""

    def __init__(self, save_fn, rank=0):
        self.save_fn = save_fn
        self.rank = rank
        self.requested = False
        signal.signal(signal.SIGTERM, self._handle)  # ok: MLS307
        signal.signal(signal.SIGUSR1, self._handle)

    def _handle(self, signum, frame):
        self.requested = True

    def maybe_stop(self, step):
        """Checked at the end of every training step, so we never exit mid-update."""
        if not self.requested:
            return
        if self.rank == 0:
            self.save_fn(step)
            job_id = os.environ.get("SLURM_JOB_ID")
            if job_id:
                subprocess.run(["scontrol", "requeue", job_id], check=False)  # ok: MLS308
        sys.exit(0)  # ok: MLS307


def download(url, dst, retries=5, timeout=30):
    if os.path.exists(dst):
        return dst
    tmp = dst + ".part"
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, "wb") as f:
                while chunk := r.read(1 << 20):
                    f.write(chunk)
            os.replace(tmp, dst)
            return dst
        except OSError as e:
            print(f"[download] {url} failed ({e}), retry {attempt + 1}/{retries}", file=sys.stderr)
            time.sleep(min(60, 2 ** attempt))  # ok: MLS307
    raise RuntimeError(f"could not download {url}")
