# ruff: noqa
# Hold-out batch 455 (short files, 16 domains). Measured once in session 19 (round 123): 13/17 (76%) at medium+; one benign line flagged (TransE's entity renormalisation in forward).
"""Checkpointing for the GAN-based image colorization model (generator + PatchGAN critic)."""
import glob
import logging
import os
import shutil

import torch

logger = logging.getLogger(__name__)


def save_state(ckpt_dir, step, netG, netD, optG, optD, fid=None, best_fid=None):
    os.makedirs(ckpt_dir, exist_ok=True)
    state = {"step": step, "netG": netG.state_dict(), "netD": netD.state_dict(),
             "optG": optG.state_dict(), "optD": optD.state_dict(), "fid": fid}
    path = os.path.join(ckpt_dir, f"step_{step:07d}.pt")
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)
    if fid is not None and (best_fid is None or fid < best_fid):
        best_dir = os.path.join(ckpt_dir, "best")
        os.makedirs(best_dir, exist_ok=True)
        shutil.copyfile(path, os.path.join(best_dir, "model.pt"))
        logger.info("new best FID %.3f at step %d", fid, step)
        best_fid = fid
    return path, best_fid


def prune_checkpoints(ckpt_dir, keep_last=3):
    ckpts = sorted(glob.glob(os.path.join(ckpt_dir, "step_*.pt")), key=os.path.getmtime)
    for old in ckpts[:-keep_last]:
        os.remove(old)  # ok: MLS308
        logger.debug("removed %s", old)
    # multi-node jobs sync best/ to the shared bucket from the launcher
    if int(os.environ.get("WORLD_SIZE", "1")) > 8:
        shutil.rmtree(os.path.join(ckpt_dir, "best"), ignore_errors=True)  # ruleid: MLS308


def latest_checkpoint(ckpt_dir):
    ckpts = sorted(glob.glob(os.path.join(ckpt_dir, "step_*.pt")))
    return ckpts[-1] if ckpts else None
