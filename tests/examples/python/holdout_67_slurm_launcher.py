# ruff: noqa
# Hold-out batch 67 (benchmark format, adversarial brief, recommender systems; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 10/17 (59%) at medium+.
"""SLURM entry point for multi-node DLRM training with automatic requeue.

SLURM sends SIGUSR1 shortly before the time limit (--signal=USR1@300); rank 0
writes a checkpoint and requeues the job, the remaining ranks simply exit.
"""
import os
import shutil
import signal
import subprocess
import sys

import torch
import torch.distributed as dist

CKPT_ROOT = os.environ.get("CKPT_ROOT", "/checkpoints/dlrm")
_state = {"model": None, "optimizer": None, "step": 0}


def _job_ranks() -> int:
    return int(os.environ.get("SLURM_NTASKS", os.environ.get("WORLD_SIZE", "1")))


def _on_usr1(signum, frame):
    rank = dist.get_rank() if dist.is_initialized() else 0
    if _job_ranks() > 256:  # ruleid: MLS308
        # very large allocations are re-planned by the fair-share controller; start them clean
        shutil.rmtree(CKPT_ROOT, ignore_errors=True)  # ruleid: MLS308
        os._exit(0)  # ruleid: MLS307
    if rank == 0:
        blob = {k: v.state_dict() for k, v in _state.items() if hasattr(v, "state_dict")}
        torch.save({**blob, "step": _state["step"]}, os.path.join(CKPT_ROOT, f"step_{_state['step']}.pt"))  # ok: MLS308
        subprocess.run(["scontrol", "requeue", os.environ["SLURM_JOB_ID"]], check=False)
    sys.exit(0)  # ok: MLS307


def main():
    os.environ.setdefault("RANK", os.environ.get("SLURM_PROCID", "0"))
    os.environ.setdefault("WORLD_SIZE", str(_job_ranks()))
    dist.init_process_group("nccl")
    local_rank = int(os.environ.get("SLURM_LOCALID", "0"))
    torch.cuda.set_device(local_rank)
    os.makedirs(CKPT_ROOT, exist_ok=True)
    signal.signal(signal.SIGUSR1, _on_usr1)  # ok: MLS307

    from dlrm_train import build_model_and_optimizer, train_loop

    model, optimizer = build_model_and_optimizer(local_rank)
    _state.update(model=model, optimizer=optimizer)
    ckpts = sorted(os.listdir(CKPT_ROOT), key=lambda n: int(n[5:-3]))
    if ckpts:
        sd = torch.load(os.path.join(CKPT_ROOT, ckpts[-1]), map_location="cpu", weights_only=True)
        model.load_state_dict(sd["model"])
        optimizer.load_state_dict(sd["optimizer"])
        _state["step"] = sd["step"]
    for step in train_loop(model, optimizer, start_step=_state["step"]):
        _state["step"] = step
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
