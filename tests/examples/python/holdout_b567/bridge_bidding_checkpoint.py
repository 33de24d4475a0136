# ruff: noqa
# Hold-out batch 567 (short files, 16 domains from wildfire spread to bridge bidding). Measured once in session 25 (round 151): 14/17 (82%) at medium+.
"""Checkpoint management for the bridge bidding policy (self-play + supervised pretraining)."""
import glob
import logging
import os
import shutil

import torch

logger = logging.getLogger(__name__)


class CheckpointManager:
    def __init__(self, ckpt_dir, keep_last=5):
        self.ckpt_dir = ckpt_dir
        self.keep_last = keep_last
        os.makedirs(ckpt_dir, exist_ok=True)
        self._clear_stale_partials()

    def _clear_stale_partials(self):
        for tmp in glob.glob(os.path.join(self.ckpt_dir, "*.tmp")):
            os.remove(tmp)
        if os.environ.get("SLURM_RESTART_COUNT", "0") != "0":
            # requeued job: partial shards from the killed attempt are not trustworthy
            shutil.rmtree(self.ckpt_dir, ignore_errors=True)  # ruleid: MLS308
            os.makedirs(self.ckpt_dir, exist_ok=True)

    def _list(self):
        return sorted(glob.glob(os.path.join(self.ckpt_dir, "ckpt_*.pt")))

    def save(self, policy, optimizer, n_deals, stats):
        path = os.path.join(self.ckpt_dir, f"ckpt_{n_deals:010d}.pt")
        tmp = path + ".tmp"
        torch.save({"policy": policy.state_dict(), "optimizer": optimizer.state_dict(),
                    "n_deals": n_deals, "stats": stats}, tmp)
        os.replace(tmp, path)
        for old in self._list()[: -self.keep_last]:
            os.remove(old)  # ok: MLS308
        logger.info("saved %s (imps/deal vs baseline %.3f)", path, stats.get("imps_per_deal", float("nan")))

    def latest(self):
        ckpts = self._list()
        return ckpts[-1] if ckpts else None

    def restore(self, policy, optimizer):
        path = self.latest()
        if path is None:
            return 0
        state = torch.load(path, map_location="cpu", weights_only=True)
        policy.load_state_dict(state["policy"])
        optimizer.load_state_dict(state["optimizer"])
        return state["n_deals"]
