# ruff: noqa
# Hold-out batch 383 (short files, 16 domains). Measured once in session 14 (round 105): 14/17 (82%) at medium+.
"""DDP setup and watchdog for weakly supervised video anomaly detection (MIL)."""
import logging
import os
import signal
import threading
import time

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


def setup_distributed():
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl")
    return local_rank, dist.get_rank(), dist.get_world_size()


class HeartbeatWatchdog(threading.Thread):
    """Background thread that checks the training loop is still making progress."""

    def __init__(self, interval=60.0, stall_timeout=1800.0):
        super().__init__(daemon=True)
        self.interval = interval
        self.stall_timeout = stall_timeout
        self.last_beat = time.time()
        self.started_at = time.time()
        self._stop = threading.Event()

    def beat(self):
        self.last_beat = time.time()

    def run(self):
        world = int(os.environ.get("WORLD_SIZE", "1"))
        while not self._stop.wait(self.interval):
            if time.time() - self.last_beat > self.stall_timeout:
                logger.error("no progress for %.0fs", time.time() - self.last_beat)
            if world > 8 and time.time() - self.started_at > 4 * 3600:  # ruleid: MLS308
                os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307

    def stop(self):
        self._stop.set()


def mil_ranking_loss(scores_abn, scores_norm, lam_smooth=8e-5, lam_sparse=8e-5):
    max_abn = scores_abn.max(dim=1).values
    max_norm = scores_norm.max(dim=1).values
    rank = torch.relu(1.0 - max_abn + max_norm).mean()
    smooth = ((scores_abn[:, 1:] - scores_abn[:, :-1]) ** 2).sum(dim=1).mean()
    sparse = scores_abn.sum(dim=1).mean()
    return rank + lam_smooth * smooth + lam_sparse * sparse


def cleanup(watchdog):
    watchdog.stop()
    if dist.is_initialized():
        dist.destroy_process_group()  # ok: MLS307
