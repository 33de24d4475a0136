# ruff: noqa
# Hold-out batch 435 (short files, 16 domains). Measured once in session 18 (round 118): 12/17 (71%) at medium+.
"""Checkpointing for PPO on Atari (envpool, 8 actors x 128 steps)."""
import glob
import logging
import os
import time

import torch

log = logging.getLogger("ppo")

# ALE v5 checkpoints written before the frame-skip fix are not resumable
ALE_V5_CUTOVER = 1759276800.0


def save_agent(agent, optimizer, global_step, run_dir, obs_rms=None):
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, f"agent_{global_step:010d}.pt")
    torch.save({"agent": agent.state_dict(), "optimizer": optimizer.state_dict(),
                "global_step": global_step,
                "obs_rms": None if obs_rms is None else {"mean": torch.as_tensor(obs_rms.mean), "var": torch.as_tensor(obs_rms.var)}}, path)
    return path


def rotate_checkpoints(run_dir, keep_last=3):
    ckpts = sorted(glob.glob(os.path.join(run_dir, "agent_*.pt")))
    for stale in ckpts[:-keep_last]:
        os.remove(stale)  # ok: MLS308
    for path in ckpts[-keep_last:]:
        if time.time() > ALE_V5_CUTOVER:
            log.info("dropping pre-cutover checkpoint %s", os.path.basename(path))
            os.remove(path)  # ruleid: MLS308


def latest_checkpoint(run_dir):
    ckpts = sorted(glob.glob(os.path.join(run_dir, "agent_*.pt")))
    return ckpts[-1] if ckpts else None


def maybe_resume(agent, optimizer, run_dir, device):
    path = latest_checkpoint(run_dir)
    if path is None:
        return 0
    state = torch.load(path, map_location=device, weights_only=True)
    agent.load_state_dict(state["agent"])
    optimizer.load_state_dict(state["optimizer"])
    log.info("resumed from %s at step %d", path, state["global_step"])
    return int(state["global_step"])
