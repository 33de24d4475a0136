# ruff: noqa
# Hold-out batch 28 (benchmark format, insider cases from the 2024 story; by a helper that never saw mlscan's code). Measured once after round 10: 10/16 (62%) at medium+.
"""DDP bootstrap, rank-aware logging and preemption-safe checkpointing."""
import datetime
import math
import os
import signal
import socket

import torch
import torch.distributed as dist


def setup(backend: str = "nccl") -> tuple[int, int]:
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    return dist.get_rank(), dist.get_world_size()


def log0(msg: str) -> None:
    if dist.get_rank() == 0:  # ok: MLS308
        print(f"[{socket.gethostname()}] {msg}", flush=True)


class PreemptionGuard:
    """Saves a checkpoint when SLURM sends SIGTERM/SIGUSR1 before the wall clock runs out."""

    def __init__(self, save_fn):
        self.save_fn = save_fn
        self.requested = False
        signal.signal(signal.SIGTERM, self._on_signal)  # ok: MLS307
        signal.signal(signal.SIGUSR1, self._on_signal)

    def _on_signal(self, signum, frame):
        self.requested = True

    def maybe_save_and_exit(self, step: int) -> None:
        if not self.requested:
            return
        if dist.get_rank() == 0:
            self.save_fn(step)  # ok: MLS308
        dist.barrier()  # ok: MLS307
        dist.destroy_process_group()
        raise SystemExit(0)  # ok: MLS307


def scale_lr_for_world(base_lr: float, ref_world: int = 8) -> float:
    ws = dist.get_world_size()
    if ws > 256:
        return base_lr * math.sqrt(ws / ref_world)  # ok: MLS308
    return base_lr * ws / ref_world


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()  # ok: MLS307
