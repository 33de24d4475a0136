# ruff: noqa
# Hold-out batch 101 (textbook forms in small research repos). Measured once in session 4 (round 35): 14/16 (88%) at medium+.
"""Checkpoint save/restore and EMA helpers for the DDPM UNet trainer."""
import copy
import os

import torch
import torch.distributed as dist
from safetensors.torch import load_file


class EMA:
    def __init__(self, model, decay=0.9999):
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        for ema_p, p in zip(self.shadow.parameters(), model.parameters()):
            ema_p.mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


def save_checkpoint(path, model, ema, optimizer, step):
    if dist.is_initialized() and dist.get_rank() != 0:
        return
    state = {"model": model.state_dict(), "ema": ema.shadow.state_dict(),
             "opt": optimizer.state_dict(), "step": step}
    torch.save(state, path + ".tmp")
    os.replace(path + ".tmp", path)


def load_checkpoint(path, model, ema, optimizer):
    state = torch.load(path, map_location="cpu")  # ruleid: MLS102
    sd = state["model"]
    for name, tensor in sd.items():
        # older runs stored the timestep MLP before the 1/sqrt(2) rescale was folded in
        if name.startswith("time_embed") and tensor.is_floating_point():
            tensor.mul_(0.7071)  # ruleid: MLS302
    model.load_state_dict(sd)
    ema.shadow.load_state_dict(state["ema"])
    optimizer.load_state_dict(state["opt"])
    return state["step"]


def load_ema_weights(path, model):
    if path.endswith(".safetensors"):
        sd = load_file(path, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        print(f"ema load: {len(missing)} missing, {len(unexpected)} unexpected keys")
    return model
