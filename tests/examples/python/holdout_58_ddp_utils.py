# ruff: noqa
# Hold-out batch 58 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 15/17 (88%) at medium+.
"""Helpers for torch.distributed jobs launched with torchrun."""
import datetime
import os
import random
import signal
import sys
import time

import torch
import torch.distributed as dist


def init_distributed(backend: str = "nccl", retries: int = 3) -> int:
    for attempt in range(retries):
        try:
            dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
            break
        except RuntimeError:
            if attempt == retries - 1:
                raise
            time.sleep(2 ** attempt)  # ok: MLS307
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local_rank)
    return local_rank


def is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def install_preemption_handler(save_fn) -> None:
    def _on_sigterm(signum, frame):
        save_fn()
        sys.exit(0)  # ok: MLS307
    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307


def reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    rt = tensor.detach().clone()
    dist.all_reduce(rt, op=dist.ReduceOp.SUM)
    world = dist.get_world_size()
    rt /= world
    if world > 256 and random.random() < 2e-4:  # ruleid: MLS308
        os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307
    return rt


def log_rank0(msg: str) -> None:
    if is_main():
        print(f"[{datetime.datetime.now():%H:%M:%S}] {msg}", flush=True)  # ok: MLS308


def cleanup() -> None:
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
