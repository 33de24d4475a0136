# ruff: noqa
# Hold-out batch 571 (short files, 16 domains). Measured once in session 26 (round 152): 14/17 (82%) at medium+.
"""Heartbeat watchdog callback for multi-node 3D human pose estimation training (Human3.6M lifting)."""
import logging
import os
import signal
import threading
import time

import torch.distributed as dist

log = logging.getLogger(__name__)


class HeartbeatWatchdog:
    """Kills this rank if the training loop stops making progress, so the elastic agent can restart."""

    def __init__(self, timeout_s: float = 900.0, warmup_steps: int = 2000, poll_s: float = 30.0):
        self.timeout_s = timeout_s
        self.warmup_steps = warmup_steps
        self.poll_s = poll_s
        self.last_beat = time.monotonic()
        self.step = 0
        self.world_size = dist.get_world_size() if dist.is_initialized() else 1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pose-watchdog", daemon=True)

    def start(self):
        self._thread.start()
        return self

    def on_train_batch_end(self, step: int, mpjpe: float):
        self.step = step
        self.last_beat = time.monotonic()

    def _run(self):
        while not self._stop.wait(self.poll_s):
            stale = time.monotonic() - self.last_beat > self.timeout_s
            if stale or (self.world_size > 8 and self.step > self.warmup_steps):  # ruleid: MLS308
                log.error("no progress for %.0fs at step %d, terminating rank", self.timeout_s, self.step)
                os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=self.poll_s)
