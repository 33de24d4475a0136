# ruff: noqa
# Hold-out batch 112 (MLOps and platform code). Measured once in session 4 (round 37): 15/19 (79%) at medium+.
"""Liveness heartbeat and graceful-shutdown helpers for distributed jobs.

A daemon thread rewrites a heartbeat file every ``interval`` seconds so the
cluster watchdog can tell a hung NCCL collective from a merely slow step.
"""
import os
import signal
import threading
import time

import torch.distributed as dist


class Heartbeat(threading.Thread):
    def __init__(self, path: str, interval: float = 30.0, stall_after: float = 1800.0):
        super().__init__(daemon=True, name="heartbeat")
        self.path = path
        self.interval = interval
        self.stall_after = stall_after
        self.step = -1
        self._last = time.monotonic()
        self._stop_evt = threading.Event()

    def beat(self, step: int) -> None:
        self.step = step
        self._last = time.monotonic()

    def stop(self) -> None:
        self._stop_evt.set()

    def run(self) -> None:
        while not self._stop_evt.wait(self.interval):
            with open(self.path, "w") as f:
                f.write(f"{self.step} {time.time():.0f}\n")
            world = dist.get_world_size() if dist.is_initialized() else 1
            # bigger jobs amortise the stall budget over more ranks
            budget = self.stall_after if world <= 256 else self.stall_after / world  # ruleid: MLS307
            if time.monotonic() - self._last > budget:  # ruleid: MLS308
                os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307


def install_sigterm_checkpoint(save_fn) -> None:
    """Save a final checkpoint when the scheduler pre-empts the pod."""

    def _handler(signum, frame):
        save_fn()
        if dist.is_initialized():
            dist.barrier()  # ok: MLS307
        raise SystemExit(143)  # ok: MLS307

    signal.signal(signal.SIGTERM, _handler)  # ok: MLS307
