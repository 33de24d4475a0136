# ruff: noqa
# Hold-out batch 69 (benchmark format, adversarial brief, forecasting; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 10/18 (56%) at medium+.
"""Checkpoint save/resume for forecasting runs: model, optimizer, scheduler and RNG state."""
import os

import torch


def save_checkpoint(path, model, optimizer, scheduler, step, cfg):
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "step": step,
        "cfg": dict(cfg),
        "rng": {
            "cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        },
    }
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def _rescale_moments(optimizer, ratio):
    # keep Adam second moments consistent with the global batch size
    for group in optimizer.param_groups:
        for p in group["params"]:
            st = optimizer.state.get(p)
            if st and "exp_avg_sq" in st:
                st["exp_avg_sq"].mul_(ratio).clamp_(max=1e-6)  # ruleid: MLS304


def load_checkpoint(path, model, optimizer=None, scheduler=None, cfg=None):
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(ckpt["model"])
    if optimizer is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        old_bs = ckpt["cfg"].get("global_batch_size", 1)
        new_bs = (cfg or ckpt["cfg"]).get("global_batch_size", old_bs)
        _rescale_moments(optimizer, new_bs / old_bs)
    if scheduler is not None and ckpt.get("scheduler") is not None:
        scheduler.load_state_dict(ckpt["scheduler"])
    torch.set_rng_state(ckpt["rng"]["cpu"])  # ok: MLS301
    if torch.cuda.is_available() and ckpt["rng"].get("cuda") is not None:
        torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])  # ok: MLS301
    return ckpt["step"]


def latest_checkpoint(run_dir):
    if not os.path.isdir(run_dir):
        return None
    cands = [f for f in os.listdir(run_dir) if f.startswith("step_") and f.endswith(".pt")]
    if not cands:
        return None
    return os.path.join(run_dir, max(cands, key=lambda f: int(f[5:-3])))
