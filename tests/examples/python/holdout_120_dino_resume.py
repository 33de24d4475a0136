# ruff: noqa
# Hold-out batch 120 (generative, self-supervised, compression). Measured once in session 4 (round 39): 16/18 (89%) at medium+, three benign lines flagged.
"""Resume and export utilities for DINO ViT-S/16 self-distillation runs."""
import os

import torch
from safetensors.torch import load_file, save_file


def load_backbone(model, path):
    if path.endswith(".safetensors"):
        state = load_file(path, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        state = state.get("teacher", state)
    state = {k.replace("module.", "").replace("backbone.", ""): v for k, v in state.items()}
    return model.load_state_dict(state, strict=False)


def restart_from_checkpoint(ckpt_path, run_variables=None, **objects):
    """Restore student/teacher/optimizer/fp16 scaler plus loop counters from a full checkpoint."""
    if not os.path.isfile(ckpt_path):
        return
    # full checkpoints also carry the argparse Namespace and the DINOLoss center buffer
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)  # ruleid: MLS101
    for key, obj in objects.items():
        if key in ckpt and obj is not None:
            msg = obj.load_state_dict(ckpt[key])
            print(f"=> loaded '{key}' from {ckpt_path}: {msg}")
    if run_variables is not None:
        for var in run_variables:
            if var in ckpt:
                run_variables[var] = ckpt[var]


def export_teacher(ckpt_dir, out_path):
    # tensors-only file written next to every full checkpoint by the training loop
    path = os.path.join(ckpt_dir, "teacher_weights.pth")
    state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    teacher = {k.replace("backbone.", ""): v.contiguous()
               for k, v in state["teacher"].items() if k.startswith("backbone.")}
    save_file(teacher, out_path)
    return out_path
