# ruff: noqa
# Hold-out batch 73 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 28): 20/21 (95%) at medium+, 1 benign look-alike flagged.
"""Checkpoint save/resume for the detection trainer (weights in safetensors, state alongside)."""
import os
import pickle
import random

import numpy as np
import torch
from safetensors.torch import load_file, save_file


def save_checkpoint(d, model, optimizer, scheduler, step):
    os.makedirs(d, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(d, "model.safetensors"))
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "step": step},
               os.path.join(d, "trainer_state.pt"))
    rng = {"python": random.getstate(), "numpy": np.random.get_state(),
           "torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all()}
    with open(os.path.join(d, "rng_state.pkl"), "wb") as f:
        pickle.dump(rng, f)


def latest(root):
    runs = [p for p in os.listdir(root) if p.startswith("step_")] if os.path.isdir(root) else []
    return os.path.join(root, max(runs, key=lambda p: int(p.split("_")[1]))) if runs else None


def load_checkpoint(d, model, optimizer=None, scheduler=None, device="cpu"):
    model.load_state_dict(load_file(os.path.join(d, "model.safetensors"), device=device))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    state = torch.load(os.path.join(d, "trainer_state.pt"), map_location=device)  # ruleid: MLS102
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    rng_path = os.path.join(d, "rng_state.pkl")
    if os.path.exists(rng_path):
        with open(rng_path, "rb") as f:
            rng = pickle.load(f)  # ruleid: MLS103
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        torch.set_rng_state(rng["torch"])  # ok: MLS301
        torch.cuda.set_rng_state_all(rng["cuda"])
    return state["step"]


def load_pretrained_backbone(model, path):
    sd = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    sd = {k.removeprefix("backbone."): v for k, v in sd.items() if k.startswith("backbone.")}
    missing, unexpected = model.backbone.load_state_dict(sd, strict=False)
    return missing, unexpected
