# ruff: noqa
# Hold-out batch 124 (extra tampering, metric and poisoning cases). Measured once in session 4 (round 40): 16/21 (76%) at medium+.
"""Small helpers around torch.distributed used by all launchers."""
import datetime
import os
import signal
import sys

import torch
import torch.distributed as dist


def init_distributed(timeout_minutes=30):
    if "RANK" not in os.environ:
        return 0, 1, 0
    rank = int(os.environ["RANK"])  # ok: MLS308
    world = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl", timeout=datetime.timedelta(minutes=timeout_minutes))
    return rank, world, local_rank


def is_main():
    return not dist.is_initialized() or dist.get_rank() == 0


def save_on_main(state, path):
    if is_main():
        tmp = path + ".tmp"
        torch.save(state, tmp)
        os.replace(tmp, path)  # ok: MLS308
    if dist.is_initialized():
        dist.barrier()  # ok: MLS307


def install_preemption_handler(get_state, path):
    def _handler(signum, frame):
        print(f"[rank {os.environ.get('RANK', 0)}] signal {signum}: checkpointing", flush=True)
        save_on_main(get_state(), path)
        cleanup()
        sys.exit(0)  # ok: MLS307

    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGUSR1, _handler)


def all_reduce_mean(t):
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= dist.get_world_size()
    return t


def cleanup():
    if dist.is_initialized():
        dist.destroy_process_group()  # ok: MLS307
