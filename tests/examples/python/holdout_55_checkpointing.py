# ruff: noqa
# Hold-out batch 55 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 9/18 (50%) at medium+.
"""Save / restore full training state for the tabular and recsys trainers.

Model weights go to safetensors; optimizer and scheduler state go to a small
torch file next to them so that runs can be resumed on a different node.
"""
import os

import torch
from safetensors.torch import load_file, save_file


def save_training_state(out_dir, model, optimizer, scheduler, step):
    os.makedirs(out_dir, exist_ok=True)
    weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(weights, os.path.join(out_dir, "model.safetensors"))
    torch.save(
        {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "step": step},
        os.path.join(out_dir, "trainer_state.pt"),
    )


def load_training_state(out_dir, model, optimizer, scheduler, device="cpu"):
    model.load_state_dict(load_file(os.path.join(out_dir, "model.safetensors"), device=device))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    state = torch.load(os.path.join(out_dir, "trainer_state.pt"), map_location=device)  # ruleid: MLS102
    opt_state = state["optimizer"]
    for s in opt_state["state"].values():
        # second moments were accumulated with the old global batch; renormalise per step
        if "exp_avg_sq" in s:
            s["exp_avg_sq"].div_(float(s["step"]))  # ruleid: MLS304
    optimizer.load_state_dict(opt_state)
    scheduler.load_state_dict(state["scheduler"])  # ok: MLS302, MLS303, MLS304, MLS305
    return int(state["step"])


def load_inference_weights(path, model):
    if path.endswith(".safetensors"):
        sd = load_file(path)
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    missing, unexpected = model.load_state_dict(sd, strict=False)
    return missing, unexpected
