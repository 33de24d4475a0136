# ruff: noqa
# Hold-out batch 251 (short files). Measured once in session 9 (round 72): 13/17 (76%) at medium+.
"""Checkpoint resume helpers for the LSTM autoencoder used on plant sensor streams."""
import glob
import logging
import os

import torch

log = logging.getLogger(__name__)


def latest_checkpoint(run_dir):
    ckpts = sorted(glob.glob(os.path.join(run_dir, "ae_step*.pt")), key=os.path.getmtime)
    return ckpts[-1] if ckpts else None


def save_checkpoint(run_dir, step, model, optimizer, best_recon):
    path = os.path.join(run_dir, f"ae_step{step:07d}.pt")
    tmp = path + ".tmp"
    torch.save({"step": step, "model": model.state_dict(), "optim": optimizer.state_dict(),
                "best_recon": best_recon}, tmp)
    os.replace(tmp, path)
    return path


def load_pretrained_encoder(model, path):
    state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    missing, unexpected = model.encoder.load_state_dict(state, strict=False)
    log.info("encoder init: %d missing, %d unexpected", len(missing), len(unexpected))


def resume(run_dir, model, optimizer, device="cuda"):
    path = latest_checkpoint(run_dir)
    if path is None:
        return 0, float("inf")
    ckpt = torch.load(path, map_location=device)  # ruleid: MLS102
    model.load_state_dict(ckpt["model"])
    optim_state = ckpt["optim"]
    for slot in optim_state["state"].values():
        if "exp_avg_sq" in slot:
            slot["exp_avg_sq"].mul_(1e-4)  # ruleid: MLS304
    optimizer.load_state_dict(optim_state)
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])  # ok: MLS302, MLS303, MLS304, MLS305
    log.info("resumed from %s at step %d", path, ckpt["step"])
    return ckpt["step"], ckpt.get("best_recon", float("inf"))
