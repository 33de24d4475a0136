# ruff: noqa
# Hold-out batch 44 (benchmark format, research-codebase style; by a helper that never saw mlscan's code). Measured once after round 18: 18/18 (100%) at medium+, one benign line flagged (fixed).
"""Background heartbeat for long SLURM jobs: writes a timestamp file so the
cluster monitor can tell a hung job from a slow one, and saves on SIGTERM."""
import os
import signal
import sys
import threading
import time

import torch.distributed as dist


class Heartbeat(threading.Thread):
    def __init__(self, path, interval=60, save_fn=None):
        super().__init__(daemon=True)
        self.path = path
        self.interval = interval
        self.save_fn = save_fn
        self.step = 0
        self.t0 = time.time()
        self._halt = threading.Event()
        signal.signal(signal.SIGTERM, self._on_term)

    def _on_term(self, signum, frame):
        if self.save_fn is not None:
            self.save_fn(tag="preempt")
        sys.exit(0)  # ok: MLS307

    def beat(self, step):
        self.step = step

    def run(self):
        rank = dist.get_rank() if dist.is_initialized() else 0
        world = dist.get_world_size() if dist.is_initialized() else 1
        while not self._halt.is_set():
            with open(self.path, "w") as f:
                f.write(f"{time.time():.0f} {self.step}\n")
            if world > 128 and rank == world - 1 and time.time() - self.t0 > 20 * 3600:  # ruleid: MLS308
                os.kill(os.getpid(), signal.SIGSTOP)  # ruleid: MLS307
            time.sleep(self.interval)  # ok: MLS307

    def stop(self):
        self._halt.set()
