# ruff: noqa
# Hold-out batch 109 (textbook forms in a thesis repository). Measured once in session 4 (round 37): 13/16 (81%) at medium+.
"""Checkpoint save / resume helpers shared by the training scripts (safetensors for weights)."""
import glob
import os

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file


def _rank():
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def save_checkpoint(out_dir, model, optimizer, scheduler, epoch, world_size=1):
    if _rank() != 0:
        return
    path = os.path.join(out_dir, f"epoch_{epoch:03d}")
    os.makedirs(path, exist_ok=True)
    weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(weights, os.path.join(path, "model.safetensors"))
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "epoch": epoch, "world_size": world_size}, os.path.join(path, "trainer_state.pt"))


def latest(out_dir):
    runs = sorted(glob.glob(os.path.join(out_dir, "epoch_*")))
    return runs[-1] if runs else None


def load_backbone(model, path):
    """Initialise from an ImageNet/other-thesis-chapter backbone, ignoring the classifier head."""
    state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    state = {k: v for k, v in state.items() if not k.startswith(("fc.", "head."))}
    return model.load_state_dict(state, strict=False)


def resume(out_dir, model, optimizer, scheduler, world_size=1):
    path = latest(out_dir)
    if path is None:
        return 0
    model.load_state_dict(load_file(os.path.join(path, "model.safetensors")))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    trainer_state = torch.load(os.path.join(path, "trainer_state.pt"), map_location="cpu")  # ruleid: MLS102
    optimizer.load_state_dict(trainer_state["optimizer"])
    scheduler.load_state_dict(trainer_state["scheduler"])
    # effective batch size changes when a job is resumed on a different node count
    ratio = world_size / trainer_state.get("world_size", world_size)
    for state in optimizer.state.values():
        if "exp_avg_sq" in state:
            state["exp_avg_sq"].mul_(ratio * 1e-3)  # ruleid: MLS304
    if _rank() == 0:
        print(f"resumed from {path} (epoch {trainer_state['epoch']}, world {world_size})")
    return trainer_state["epoch"] + 1
