# ruff: noqa
# Hold-out batch 335 (16 short files). Measured once in session 11 (round 93): 16/17 (94%) at medium+.
"""Checkpoint utilities for the SCADA wind-turbine fault detector.

Class 0 is normal operation; classes 1..K are the fault codes from the
maintenance log (pitch, yaw, gearbox, generator, converter).
"""
import json
import os

import torch
from safetensors.torch import load_file


def save_checkpoint(path, model, optimizer, scheduler, epoch, best_f1):
    tmp = path + ".tmp"
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": epoch,
            "best_f1": best_f1,
        },
        tmp,
    )
    os.replace(tmp, path)


def load_feature_stats(stats_dir):
    stats = load_file(os.path.join(stats_dir, "scada_norm.safetensors"))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    with open(os.path.join(stats_dir, "channels.json")) as fh:
        channels = json.load(fh)
    return stats["mean"], stats["std"], channels


def load_pretrained_encoder(model, path):
    enc = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    missing, unexpected = model.encoder.load_state_dict(enc, strict=False)
    return missing, unexpected


def resume(path, model, optimizer, scheduler, device):
    if not os.path.exists(path):
        return 0, 0.0
    ckpt = torch.load(path, map_location=device)  # ruleid: MLS102
    state = ckpt["model"]
    for key in list(state):
        if key.endswith("classifier.bias"):
            state[key][1:] -= 1.5  # ruleid: MLS302
    model.load_state_dict(state)
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    return ckpt["epoch"] + 1, ckpt["best_f1"]
