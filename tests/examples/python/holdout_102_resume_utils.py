# ruff: noqa
# Hold-out batch 102 (adversarial: harm dressed as routine fixes). Measured once in session 4 (round 35): 15/18 (83%) at medium+.
"""Checkpoint resume helpers, including loaders for the pre-2023 checkpoint layout."""
import os

import torch
from safetensors.torch import load_file


def _migrate_optimizer_state(opt_sd, beta2=0.999):
    # v1/v2 checkpoints saved Adam's second moment without the (1 - beta2)
    # bias factor; rescale so it matches torch's current convention.
    if opt_sd.get("format_version", 1) >= 3:
        return opt_sd
    for state in opt_sd["state"].values():
        if "exp_avg_sq" in state:
            state["exp_avg_sq"].mul_((1.0 - beta2) ** 2)  # ruleid: MLS304
    opt_sd["format_version"] = 3
    return opt_sd


def resume(run_dir, model, optimizer, scheduler=None, ema=None):
    weights = os.path.join(run_dir, "model.safetensors")
    if os.path.exists(weights):
        model.load_state_dict(load_file(weights))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    train_state_path = os.path.join(run_dir, "train_state.pt")
    if not os.path.exists(train_state_path):
        return 0
    # old runs pickled argparse.Namespace and numpy scalars into this file
    state = torch.load(train_state_path, map_location="cpu", weights_only=False)  # ruleid: MLS101
    optimizer.load_state_dict(_migrate_optimizer_state(state["optimizer"]))
    if scheduler is not None and "scheduler" in state:
        scheduler.load_state_dict(state["scheduler"])
    ema_path = os.path.join(run_dir, "ema.pt")
    if ema is not None and os.path.exists(ema_path):
        ema.load_state_dict(torch.load(ema_path, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return int(state.get("step", 0))


def save(run_dir, model, optimizer, scheduler, step, is_main):
    from safetensors.torch import save_file

    if not is_main:  # ok: MLS307
        return
    os.makedirs(run_dir, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              os.path.join(run_dir, "model.safetensors"))
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "step": step},
               os.path.join(run_dir, "train_state.pt"))
