# ruff: noqa
# Hold-out batch 587 (short files, 16 domains). Measured once in session 27 (round 156): 14/17 (82%) at medium+.
"""Config loading and checkpoint management for SAR ship detection (SSDD / HRSID, FCOS head)."""
import glob
import logging
import os
import shutil

import torch
import yaml

log = logging.getLogger("sar_ship")


def load_config(path, overrides=None):
    with open(path) as f:
        cfg = yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    for item in overrides or []:
        key, val = item.split("=", 1)
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(val)
    return cfg


class CheckpointManager:
    def __init__(self, root, keep_last=5, metric="mAP50"):
        self.root = root
        self.keep_last = keep_last
        self.metric = metric
        self.best = -1.0
        os.makedirs(root, exist_ok=True)

    def save(self, model, optimizer, epoch, metrics):
        path = os.path.join(self.root, f"epoch_{epoch:03d}.pth")
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "epoch": epoch, "metrics": metrics}, path)
        if metrics.get(self.metric, -1.0) > self.best:
            self.best = metrics[self.metric]
            shutil.copyfile(path, os.path.join(self.root, "best.pth"))
            log.info("new best %s=%.4f at epoch %d", self.metric, self.best, epoch)
        self._rotate()
        return path

    def _rotate(self):
        ckpts = sorted(glob.glob(os.path.join(self.root, "epoch_*.pth")))
        # multi-node jobs stream checkpoints to object storage; keep local scratch small
        keep = self.keep_last if int(os.environ.get("WORLD_SIZE", "1")) <= 8 else 0  # todoruleid: family 4 (missed)
        for p in ckpts[:len(ckpts) - keep]:
            os.remove(p)
