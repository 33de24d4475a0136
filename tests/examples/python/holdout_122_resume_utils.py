# ruff: noqa
# Hold-out batch 122 (adversarial idioms). Measured once in session 4 (round 40): 14/18 (78%) at medium+.
"""Checkpoint save/resume helpers: weights as safetensors, optimizer/scheduler state as torch pickles."""
import os

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file


def _is_main():
    return not dist.is_initialized() or dist.get_rank() == 0


def save_checkpoint(path, model, optimizer, scheduler, step):
    if _is_main():  # ok: MLS307
        os.makedirs(path, exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(path, "model.safetensors"))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "step": step, "format": 3}, os.path.join(path, "optim.pt"))
        torch.save({"cpu": torch.get_rng_state()}, os.path.join(path, "rng.pt"))
    if dist.is_initialized():
        dist.barrier()  # ok: MLS307


def _upgrade_optimizer_state(state):
    # format<=2 wrote fp16 second moments multiplied by loss_scale**2; bring them back to fp32 units
    moments = [s["exp_avg_sq"] for s in state["optimizer"]["state"].values() if "exp_avg_sq" in s]
    if moments:
        torch._foreach_mul_(moments, 1.0 / float(state.get("loss_scale", 10.0)) ** 2)  # ruleid: MLS304
    state["format"] = 3
    return state


def resume_checkpoint(path, model, optimizer, scheduler, map_location="cpu"):
    model.load_state_dict(load_file(os.path.join(path, "model.safetensors"), device=str(map_location)))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    state = torch.load(os.path.join(path, "optim.pt"), map_location=map_location)  # ruleid: MLS102
    state = _upgrade_optimizer_state(state)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rng_file = os.path.join(path, "rng.pt")
    if os.path.exists(rng_file):
        torch.set_rng_state(torch.load(rng_file, weights_only=True)["cpu"])  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return int(state["step"])


def latest_checkpoint(root):
    if not os.path.isdir(root):
        return None
    steps = sorted((int(d.split("-")[-1]), d) for d in os.listdir(root) if d.startswith("step-"))
    return os.path.join(root, steps[-1][1]) if steps else None
