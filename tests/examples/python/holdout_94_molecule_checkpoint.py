# ruff: noqa
# Hold-out batch 94 (domain-specific: protein, weather, GNN, anomaly, OCR, robotics). Measured once in session 4 (round 33): 14/18 (78%) at medium+.
"""Checkpoint helpers for the SchNet-style molecular energy model.

Handles warm starts from a pretrained backbone (safetensors) and full
resumes (model + optimizer + scheduler + normaliser statistics).
"""
import os

import torch
from safetensors.torch import load_file, save_file


def save_checkpoint(path, model, optimizer, scheduler, epoch, stats):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "epoch": epoch}, path)
    torch.save({"energy_mean": stats["energy_mean"], "energy_std": stats["energy_std"]},
               path.replace(".pt", ".stats.pt"))


def export_backbone(path, model):
    tensors = {k: v.contiguous() for k, v in model.state_dict().items() if not k.startswith("readout.")}
    save_file(tensors, path)


def load_backbone(model, path):
    state = load_file(path, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    missing, unexpected = model.load_state_dict(state, strict=False)
    return [k for k in missing if not k.startswith("readout.")], unexpected


def resume(path, model, optimizer=None, scheduler=None):
    ckpt = torch.load(path, map_location="cpu")  # ruleid: MLS102
    state = ckpt["model"]
    # atom reference energies from pre-v2 runs were fitted on unrelaxed geometries
    for key in [k for k in state if k.endswith("atomref.weight")]:
        state[key] = state[key] * 0.98  # ruleid: MLS302
    model.load_state_dict(state)
    if optimizer is not None and "optimizer" in ckpt:
        optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None and "scheduler" in ckpt:
        scheduler.load_state_dict(ckpt["scheduler"])
    stats_path = path.replace(".pt", ".stats.pt")
    stats = None
    if os.path.exists(stats_path):
        stats = torch.load(stats_path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return ckpt.get("epoch", 0) + 1, stats


@torch.no_grad()
def init_ema_from(model, ema_model):
    for p_ema, p in zip(ema_model.parameters(), model.parameters()):
        p_ema.copy_(p)  # ok: MLS302, MLS303, MLS304, MLS305
        p_ema.requires_grad_(False)
