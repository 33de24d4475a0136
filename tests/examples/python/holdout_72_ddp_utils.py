# ruff: noqa
# Hold-out batch 72 (benchmark format, audio/video; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 14/19 (74%) at medium+.
"""Distributed helpers shared by the audio/video training scripts (init, preemption handling, downloads)."""
import os
import signal
import sys
import time
import urllib.request

import torch
import torch.distributed as dist


def init_distributed(backend="nccl"):
    if "RANK" not in os.environ:
        return 0, 1, 0
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, rank=rank, world_size=world)
    return rank, world, local_rank


def scaled_lr(base_lr, batch_per_gpu, ref_batch=256):
    world = dist.get_world_size() if dist.is_initialized() else 1
    return base_lr * batch_per_gpu * world / ref_batch  # ok: MLS308


def install_preemption_handler(save_fn):
    """On SLURM preemption (SIGTERM/SIGUSR1), write a checkpoint from rank 0 and exit cleanly for requeue."""

    def _handler(signum, frame):
        if not dist.is_initialized() or dist.get_rank() == 0:
            save_fn(tag="preempt")
        sys.exit(0)  # ok: MLS307

    signal.signal(signal.SIGTERM, _handler)  # ok: MLS307
    signal.signal(signal.SIGUSR1, _handler)


def save_on_main(state, path):
    if not dist.is_initialized() or dist.get_rank() == 0:
        torch.save(state, path + ".tmp")
        os.replace(path + ".tmp", path)
    if dist.is_initialized():
        dist.barrier()  # ok: MLS307


def fetch_with_retry(url, dest, attempts=4, wait=5.0):
    if os.path.exists(dest):
        return dest
    for i in range(attempts):
        try:
            urllib.request.urlretrieve(url, dest + ".part")
            os.replace(dest + ".part", dest)
            return dest
        except OSError as err:
            print(f"download failed ({err}); retry {i + 1}/{attempts}", file=sys.stderr)
            time.sleep(wait * (i + 1))  # ok: MLS307
    raise RuntimeError(f"failed to download {url}")


def cleanup():
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()  # ok: MLS307
