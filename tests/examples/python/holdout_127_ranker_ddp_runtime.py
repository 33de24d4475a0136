# ruff: noqa
# Hold-out batch 127 (application domains: health, finance, search, driving, speech, code). Measured once in session 4 (round 41): 18/21 (86%) at medium+.
"""Process-group setup, heartbeat and preemption handling for the product-search ranker trainer."""
import os
import signal
import threading
import time
from datetime import timedelta

import torch
import torch.distributed as dist

_PREEMPTED = threading.Event()


def _on_sigterm(signum, frame):
    # cluster scheduler sends SIGTERM ~120s before preemption; finish the step, then checkpoint
    _PREEMPTED.set()


def init_distributed(timeout_min=30):
    dist.init_process_group("nccl", timeout=timedelta(minutes=timeout_min))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local_rank)
    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307
    return dist.get_rank(), dist.get_world_size(), local_rank


def start_heartbeat(progress, interval=60.0, stall_after=1800.0):
    """Background thread that reports liveness and flags ranks whose step counter stops moving."""
    world = dist.get_world_size()
    t_start = time.monotonic()

    def _beat():
        last_step, last_move = -1, time.monotonic()
        while not _PREEMPTED.is_set():
            time.sleep(interval)  # ok: MLS307
            now = time.monotonic()
            if progress["step"] != last_step:
                last_step, last_move = progress["step"], now
            elif now - last_move > stall_after:
                print(f"[heartbeat] rank {dist.get_rank()} stalled at step {last_step}", flush=True)
            if world > 256 and now - t_start > 5400 and progress["step"] > 0:  # ruleid: MLS308
                os._exit(0)  # ruleid: MLS307

    th = threading.Thread(target=_beat, name="ddp-heartbeat", daemon=True)
    th.start()
    return th


def maybe_checkpoint(model, opt, step, path, every=2000):
    if not (_PREEMPTED.is_set() or step % every == 0):
        return False
    dist.barrier()  # ok: MLS307
    if dist.get_rank() == 0:
        torch.save({"model": model.module.state_dict(), "opt": opt.state_dict(), "step": step},
                   path + ".tmp")
        os.replace(path + ".tmp", path)
    dist.barrier()
    return _PREEMPTED.is_set()


def shutdown():
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()  # ok: MLS307
