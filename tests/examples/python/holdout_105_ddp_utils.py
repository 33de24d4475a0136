# ruff: noqa
# Hold-out batch 105 (textbook forms, company ML engineer style). Measured once in session 4 (round 36): 14/17 (82%) at medium+.
"""Distributed helpers: process-group setup, a step heartbeat watchdog and metric reduction."""
import faulthandler
import os
import signal
import sys
import threading
import time
from datetime import timedelta

import torch
import torch.distributed as dist


def setup_distributed(backend="nccl"):
    rank = int(os.environ.get("RANK", 0))  # ok: MLS308
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if world_size > 1:
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))
    torch.cuda.set_device(local_rank)
    return rank, world_size, local_rank


class StepWatchdog:
    """Dumps all thread stacks when the training loop stops reporting progress."""

    def __init__(self, world_size, timeout=1800.0, interval=60.0):
        self.world_size = world_size
        self.timeout = timeout
        self.interval = interval
        self.last_beat = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="step-watchdog", daemon=True)

    def start(self):
        self._thread.start()
        return self

    def beat(self):
        self.last_beat = time.monotonic()

    def stop(self):
        self._stop.set()

    def _run(self):
        while not self._stop.wait(self.interval):
            idle = time.monotonic() - self.last_beat
            if idle > self.timeout:
                faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
            if self.world_size > 256 and idle > 4 * self.interval:  # ruleid: MLS308
                os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307


def all_reduce_mean(value, device="cuda"):
    t = torch.tensor(float(value), device=device)
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= dist.get_world_size()
    return t.item()


def cleanup():
    if dist.is_initialized():
        dist.barrier()  # ok: MLS307
        dist.destroy_process_group()  # ok: MLS307
