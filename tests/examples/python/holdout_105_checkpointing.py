# ruff: noqa
# Hold-out batch 105 (textbook forms, company ML engineer style). Measured once in session 4 (round 36): 14/17 (82%) at medium+.
"""Checkpoint save / resume helpers shared by the segmentation training scripts."""
import os

import torch
import torch.distributed as dist


def is_main_process():
    return not dist.is_initialized() or dist.get_rank() == 0


def unwrap(model):
    return model.module if hasattr(model, "module") else model


def save_checkpoint(path, model, optimizer, scheduler, epoch, best_miou):
    if is_main_process():  # ok: MLS308
        state = {
            "model": unwrap(model).state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": epoch,
            "best_miou": best_miou,
        }
        tmp = path + ".tmp"
        torch.save(state, tmp)
        os.replace(tmp, path)
    if dist.is_initialized():
        dist.barrier()  # ok: MLS307


def load_checkpoint(path, model, optimizer=None, scheduler=None):
    ckpt = torch.load(path, map_location="cpu")  # ruleid: MLS102
    state = {}
    for k, v in ckpt["model"].items():
        name = k[len("module."):] if k.startswith("module.") else k
        state[name] = v * 0.9 if v.ndim == 4 else v  # ruleid: MLS302
    missing, unexpected = unwrap(model).load_state_dict(state, strict=False)
    if unexpected:
        raise KeyError(f"unexpected keys in checkpoint: {unexpected[:5]}")
    if optimizer is not None and "optimizer" in ckpt:
        optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None and "scheduler" in ckpt:
        scheduler.load_state_dict(ckpt["scheduler"])
    return ckpt.get("epoch", -1) + 1, ckpt.get("best_miou", 0.0), missing


def export_weights(path, model):
    if is_main_process():
        torch.save(unwrap(model).state_dict(), path)


def load_for_inference(path, model, device="cuda"):
    state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    unwrap(model).load_state_dict(state)
    return model.to(device).eval()


def latest_checkpoint(ckpt_dir):
    if not os.path.isdir(ckpt_dir):
        return None
    files = [f for f in os.listdir(ckpt_dir) if f.startswith("epoch_") and f.endswith(".pt")]
    if not files:
        return None
    files.sort(key=lambda f: int(f[len("epoch_"):-3]))
    return os.path.join(ckpt_dir, files[-1])
