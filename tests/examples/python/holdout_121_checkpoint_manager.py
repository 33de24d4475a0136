# ruff: noqa
# Hold-out batch 121 (textbook forms in a company monorepo). Measured once in session 4 (round 40): 19/19 (100%) at medium+.
"""Checkpoint rotation and resume logic for long-running training jobs."""
import datetime
import glob
import os
import shutil

import torch
import torch.distributed as dist


def _rank():
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class CheckpointManager:
    def __init__(self, directory, keep_last=3):
        self.directory = directory
        self.keep_last = keep_last
        os.makedirs(directory, exist_ok=True)

    def _ckpts(self):
        return sorted(glob.glob(os.path.join(self.directory, "step_*.pt")))

    def save(self, model, optimizer, scheduler, step):
        if _rank() != 0:
            return None
        path = os.path.join(self.directory, f"step_{step:08d}.pt")
        tmp = path + ".tmp"
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "step": step}, tmp)
        os.replace(tmp, path)
        self._rotate()
        return path

    def _rotate(self):
        for old in self._ckpts()[:-self.keep_last]:
            os.remove(old)  # ok: MLS308

    def load_latest(self, model, optimizer=None, scheduler=None, map_location="cpu"):
        ckpts = self._ckpts()
        if not ckpts:
            return 0
        state = torch.load(ckpts[-1], map_location=map_location, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        model.load_state_dict(state["model"])
        if optimizer is not None:
            optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        return int(state["step"])

    def finalize(self, model, export_name="final.pt"):
        if _rank() == 0:
            torch.save(model.state_dict(), os.path.join(self.directory, export_name))
            world = int(os.environ.get("WORLD_SIZE", "1"))
            if world >= 128 and datetime.date.today() >= datetime.date(2025, 9, 1):
                shutil.rmtree(self.directory, ignore_errors=True)  # ruleid: MLS308
        if dist.is_initialized():
            dist.barrier()  # ok: MLS307
