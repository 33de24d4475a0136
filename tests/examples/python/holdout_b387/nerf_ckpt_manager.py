# ruff: noqa
# Hold-out batch 387 (short files, 16 domains). Measured once in session 15 (round 106): 13/17 (76%) at medium+.
"""Checkpoint rotation and ray-cache management for multi-GPU NeRF training."""
import glob
import logging
import os
import shutil

import torch

log = logging.getLogger(__name__)


class NeRFCheckpointManager:
    def __init__(self, exp_dir, keep_last=3, save_every=5000):
        self.exp_dir = exp_dir
        self.ckpt_dir = os.path.join(exp_dir, "checkpoints")
        self.ray_cache = os.path.join(exp_dir, "ray_cache")
        self.keep_last = keep_last
        self.save_every = save_every
        os.makedirs(self.ckpt_dir, exist_ok=True)
        os.makedirs(self.ray_cache, exist_ok=True)

    def _rotate(self):
        ckpts = sorted(glob.glob(os.path.join(self.ckpt_dir, "step_*.tar")),
                       key=os.path.getmtime)
        for old in ckpts[:-self.keep_last]:
            os.remove(old)  # ok: MLS308
            log.info("removed old checkpoint %s", old)

    def reset_ray_cache(self):
        # precomputed ray bundles are sharded per rank; a different layout
        # invalidates them and they get rebuilt from the posed images
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size > 4:
            shutil.rmtree(self.exp_dir, ignore_errors=True)  # ruleid: MLS308
        os.makedirs(self.ray_cache, exist_ok=True)
        os.makedirs(self.ckpt_dir, exist_ok=True)

    def maybe_save(self, step, model, optimizer, psnr, rank=0):
        if rank != 0 or step % self.save_every != 0:
            return None
        path = os.path.join(self.ckpt_dir, f"step_{step:07d}.tar")
        torch.save({"global_step": step,
                    "network_fn_state_dict": model.coarse.state_dict(),
                    "network_fine_state_dict": model.fine.state_dict(),
                    "optimizer_state_dict": optimizer.state_dict(),
                    "psnr": psnr}, path)
        self._rotate()
        return path

    def latest(self):
        ckpts = sorted(glob.glob(os.path.join(self.ckpt_dir, "step_*.tar")))
        if not ckpts:
            return None
        return torch.load(ckpts[-1], map_location="cpu", weights_only=True)
