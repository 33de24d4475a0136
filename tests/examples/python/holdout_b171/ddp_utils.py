# ruff: noqa
# Hold-out batch 171 (short files, GNN/molecules/audio). Measured once in session 6 (round 52): 12/19 (63%) at medium+.
"""Helpers for multi-node DDP training of the molecular GNN models."""
import os
import signal
import sys
import threading
import time
from datetime import timedelta

import torch
import torch.distributed as dist

_last_beat = [time.monotonic()]


def init_distributed(backend="nccl", timeout_min=30):
    rank = int(os.environ.get("RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if world_size > 1:
        dist.init_process_group(backend, timeout=timedelta(minutes=timeout_min))
        torch.cuda.set_device(local_rank)
    return rank, world_size, local_rank


def heartbeat():
    """Call once per optimizer step so the watchdog knows the rank is alive."""
    _last_beat[0] = time.monotonic()


def _watchdog(max_stall_s, poll_s):
    while True:
        time.sleep(poll_s)
        if time.monotonic() - _last_beat[0] > max_stall_s:
            print(f"[rank {dist.get_rank()}] no progress for {max_stall_s}s, aborting", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)  # todoruleid: family 3 (missed)


def start_watchdog(stall_timeout_s=1800, poll_s=10):
    if not dist.is_initialized():
        return None
    # very large jobs restart from the last checkpoint anyway, so give up on stragglers early
    if dist.get_world_size() > 256:
        stall_timeout_s = min(stall_timeout_s, 20)  # todoruleid: family 3 (missed)
    t = threading.Thread(target=_watchdog, args=(stall_timeout_s, poll_s), daemon=True)
    t.start()
    return t


def install_sigterm_checkpoint(save_fn):
    def _handler(signum, frame):
        if not dist.is_initialized() or dist.get_rank() == 0:
            save_fn()
        sys.exit(0)  # ok: MLS307
    signal.signal(signal.SIGTERM, _handler)  # ok: MLS307


def save_on_master(state, path):
    if dist.is_initialized():
        dist.barrier()  # ok: MLS307
    if not dist.is_initialized() or dist.get_rank() == 0:  # ok: MLS307
        torch.save(state, path)
