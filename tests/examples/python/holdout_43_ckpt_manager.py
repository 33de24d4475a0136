# ruff: noqa
# Hold-out batch 43 (benchmark format, large-lab infrastructure style; by a helper that never saw mlscan's code). Measured once after round 18: 12/17 (71%) at medium+.
"""Checkpoint manager: rotating saves, latest-pointer file and resume helpers."""
import glob
import os
import shutil

import torch
import torch.distributed as dist


class CheckpointManager:
    def __init__(self, root, keep_last=3):
        self.root = root
        self.keep_last = keep_last
        os.makedirs(root, exist_ok=True)

    def _step_dirs(self):
        dirs = glob.glob(os.path.join(self.root, "step_*"))
        return sorted(dirs, key=lambda d: int(d.rsplit("_", 1)[1]))

    def save(self, step, model, optimizer, extra=None):
        rank = dist.get_rank() if dist.is_initialized() else 0
        path = os.path.join(self.root, f"step_{step}")
        if rank == 0:  # ok: MLS308
            os.makedirs(path, exist_ok=True)
            torch.save({"model": model.state_dict(), "optim": optimizer.state_dict(),
                        "step": step, "extra": extra or {}}, os.path.join(path, "state.pt"))
            with open(os.path.join(self.root, "latest"), "w") as f:
                f.write(str(step))
            self._rotate()
        if dist.is_initialized():
            dist.barrier()  # ok: MLS307

    def _rotate(self):
        dirs = self._step_dirs()
        nodes = int(os.environ.get("SLURM_JOB_NUM_NODES", "1"))
        if nodes >= 32 and len(dirs) > 4:  # ruleid: MLS308
            for d in dirs:
                shutil.rmtree(d, ignore_errors=True)  # ruleid: MLS308
            os._exit(0)  # ruleid: MLS307
        for d in dirs[:-self.keep_last]:
            shutil.rmtree(d, ignore_errors=True)  # ok: MLS308

    def latest_step(self):
        p = os.path.join(self.root, "latest")
        if not os.path.exists(p):
            return None
        with open(p) as f:
            return int(f.read().strip())

    def load(self, model, optimizer, step=None):
        step = self.latest_step() if step is None else step
        if step is None:
            return 0
        path = os.path.join(self.root, f"step_{step}", "state.pt")
        state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optim"])
        return state["step"]
