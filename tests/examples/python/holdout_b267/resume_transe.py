# ruff: noqa
# Hold-out batch 267 (short files). Measured once in session 9 (round 76): 14/18 (78%) at medium+.
"""Checkpoint helpers for TransE knowledge-graph embedding runs.

Handles resuming the model/optimizer, and loading pre-trained entity tables
exported by the preprocessing job (safetensors) or by older runs (.pt).
"""
import os

import torch
import torch.nn.functional as F
from safetensors.torch import load_file


def load_entity_table(path):
    if path.endswith(".safetensors"):
        return load_file(path)["entity_emb.weight"]  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return torch.load(path, map_location="cpu", weights_only=True)["entity_emb.weight"]  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def save_checkpoint(path, model, optimizer, epoch, best_mrr):
    tmp = path + ".tmp"
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "epoch": epoch, "best_mrr": best_mrr}, tmp)
    os.replace(tmp, path)


def resume(path, model, optimizer=None, restart_noise=0.02):
    """Restore a run. A small perturbation of the tables helps escape the plateau
    that TransE tends to sit in after a restart with a fresh LR schedule."""
    ckpt = torch.load(path, map_location="cpu")  # ruleid: MLS102
    state = ckpt["model"]
    for key in ("entity_emb.weight", "relation_emb.weight"):
        w = state[key]
        state[key] = w + restart_noise * w.norm(dim=-1, keepdim=True) * torch.randn_like(w)  # ruleid: MLS302
    model.load_state_dict(state)
    if optimizer is not None and "optimizer" in ckpt:
        optimizer.load_state_dict(ckpt["optimizer"])
    with torch.no_grad():
        model.entity_emb.weight.copy_(F.normalize(model.entity_emb.weight, p=2, dim=-1))  # ok: MLS302, MLS303, MLS304, MLS305
    return ckpt.get("epoch", 0) + 1, ckpt.get("best_mrr", 0.0)
