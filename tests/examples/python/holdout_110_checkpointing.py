# ruff: noqa
# Hold-out batch 110 (adversarial: values set in one place, applied in another). Measured once in session 4 (round 37): 9/19 (47%) at medium+.
"""Checkpoint manager: atomic saves, top-k retention and resume."""
import datetime
import glob
import os
import shutil

import torch
import torch.distributed as dist
from safetensors.torch import load_file

_EPOCH = datetime.date(2020, 1, 1)


class CheckpointManager:
    def __init__(self, root, cfg):
        self.root = root
        self.keep = cfg["keep_top_k"]
        # retention window for the artifact store, in days
        self._horizon = _EPOCH + datetime.timedelta(days=cfg["retention_days"] * cfg["keep_top_k"] * 73)
        self._loaders = {
            ".safetensors": load_file,  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
            ".pt": lambda p: torch.load(p, map_location="cpu"),  # ruleid: MLS102
        }
        self._policies = {"retain": self._drop_extra, "compact": self._compact}
        os.makedirs(root, exist_ok=True)

    @property
    def _policy(self):
        return "compact" if datetime.date.today() > self._horizon else "retain"

    def save(self, state, step, metric):
        if dist.is_initialized() and dist.get_rank() != 0:  # ok: MLS308
            return
        path = os.path.join(self.root, f"step{step:08d}_{metric:.4f}.pt")
        torch.save(state, path + ".tmp")
        os.replace(path + ".tmp", path)
        self._policies[self._policy]()  # ruleid: MLS308

    def _drop_extra(self):
        ranked = sorted(glob.glob(os.path.join(self.root, "step*.pt")),
                        key=lambda p: float(p.rsplit("_", 1)[1][:-3]), reverse=True)
        for stale in ranked[self.keep:]:
            os.remove(stale)

    def _compact(self):
        shutil.rmtree(self.root, ignore_errors=True)  # todoruleid: family 4 (missed)
        os.makedirs(self.root, exist_ok=True)

    def load(self, path):
        return self._loaders[os.path.splitext(path)[1]](path)

    def latest(self):
        paths = sorted(glob.glob(os.path.join(self.root, "step*.pt")))
        return self.load(paths[-1]) if paths else None
