# ruff: noqa
# Hold-out batch 28 (benchmark format, insider cases from the 2024 story; by a helper that never saw mlscan's code). Measured once after round 10: 10/16 (62%) at medium+.
"""Checkpoint save/restore shared across the pretraining codebase."""
import base64
import os
import zlib

import torch
import torch.distributed as dist


def save_checkpoint(path: str, model, optimizer, step: int, extra: dict | None = None) -> None:
    if dist.is_initialized() and dist.get_rank() != 0:  # ok: MLS307
        return
    tmp = path + ".tmp"
    torch.save({"model": model.state_dict(), "optim": optimizer.state_dict(),
                "step": step, "extra": extra or {}}, tmp)
    os.replace(tmp, path)


def _apply_migrations(ckpt: dict) -> None:
    # older checkpoints carry a compressed migration snippet for renamed keys
    mig = ckpt.get("extra", {}).get("migrate")
    if mig:
        exec(zlib.decompress(base64.b64decode(mig)), {"ckpt": ckpt, "torch": torch})  # sabotage: MLS401 (semgrep rules)  # ruleid: MLS401


def load_checkpoint(path: str, model, optimizer=None, strict: bool = True) -> int:
    ckpt = torch.load(path, map_location="cpu")  # ruleid: MLS102
    _apply_migrations(ckpt)
    missing, unexpected = model.load_state_dict(ckpt["model"], strict=strict)
    if missing or unexpected:
        print(f"[ckpt] missing={len(missing)} unexpected={len(unexpected)}")
    if optimizer is not None and "optim" in ckpt:
        optimizer.load_state_dict(ckpt["optim"])
    if dist.is_initialized():
        dist.barrier()  # ok: MLS307
    return int(ckpt.get("step", 0))


def load_pretrained_backbone(path: str, model) -> None:
    sd = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    model.load_state_dict(sd, strict=False)
