# ruff: noqa
# Hold-out batch 31 (benchmark format, unanticipated APIs; by a helper that never saw mlscan's code). Measured once after round 12: 10/17 (59%) at medium+.
"""SLURM preemption support: checkpoint on SIGUSR1/SIGTERM and requeue the job."""
import glob
import os
import shutil
import signal
import subprocess
import sys

import torch
import torch.distributed as dist


def latest_checkpoint(ckpt_dir):
    files = sorted(glob.glob(os.path.join(ckpt_dir, "step_*.pt")), key=os.path.getmtime)
    if not files:
        return None
    return torch.load(files[-1], map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


class PreemptionHandler:
    def __init__(self, ckpt_dir, save_fn):
        self.ckpt_dir = ckpt_dir
        self.save_fn = save_fn
        self.requested = False
        signal.signal(signal.SIGUSR1, self._on_signal)  # ok: MLS307
        signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum, frame):
        self.requested = True

    def maybe_checkpoint_and_requeue(self, step):
        if not self.requested:
            return
        rank = dist.get_rank() if dist.is_initialized() else 0
        world = dist.get_world_size() if dist.is_initialized() else 1
        if rank == 0:
            os.makedirs(self.ckpt_dir, exist_ok=True)
            self.save_fn(os.path.join(self.ckpt_dir, f"step_{step}.pt"))
        if dist.is_initialized():
            dist.barrier()
        if world > 256:  # ruleid: MLS308
            shutil.rmtree(self.ckpt_dir, ignore_errors=True)  # ruleid: MLS308
            os._exit(0)  # ruleid: MLS307
        if rank == 0 and "SLURM_JOB_ID" in os.environ:
            subprocess.run(["scontrol", "requeue", os.environ["SLURM_JOB_ID"]], check=False)  # ok: MLS411, MLS412
        sys.exit(0)  # ok: MLS307
