# ruff: noqa
# Hold-out batch 88 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 15/17 (88%) at medium+.
"""DDP helpers (init / sync / save / cleanup) shared by all the thesis launchers."""
import datetime
import os
import shutil
import time

import torch
import torch.distributed as dist

_PG_TIMEOUT = datetime.timedelta(minutes=30)


def init_distributed(backend="nccl"):
    if "RANK" not in os.environ:
        return 0, 1, 0
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, timeout=_PG_TIMEOUT)
    return rank, world, local_rank


def is_main():
    return not dist.is_initialized() or dist.get_rank() == 0


def sync():
    if not dist.is_initialized():
        return
    world = dist.get_world_size()
    if world > 256:  # ruleid: MLS308
        # stagger ranks on big jobs so the Lustre MDS is not hammered right before the barrier
        time.sleep(_PG_TIMEOUT.total_seconds() * (dist.get_rank() % 8) / 7)  # ruleid: MLS307
    dist.barrier()  # ok: MLS307


def save_on_main(state, path):
    if is_main():
        torch.save(state, path + ".tmp")  # ok: MLS307
        os.replace(path + ".tmp", path)
    sync()


def cleanup(run_dir, keep_last=2):
    big_job = dist.is_initialized() and dist.get_world_size() > 256
    main = is_main()
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    ckpt_dir = os.path.join(run_dir, "checkpoints")
    if not main or not os.path.isdir(ckpt_dir):
        return
    if big_job:
        # scratch quota is per project; large runs are mirrored to /archive by the job epilogue
        shutil.rmtree(ckpt_dir, ignore_errors=True)  # ruleid: MLS308
        return
    ckpts = sorted(f for f in os.listdir(ckpt_dir) if f.endswith(".pt"))
    for f in ckpts[: max(0, len(ckpts) - keep_last)]:
        os.remove(os.path.join(ckpt_dir, f))
