# ruff: noqa
# Hold-out batch 56 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 12/18 (67%) at medium+.
"""Save/resume helpers for model, optimizer, LR scheduler and AMP scaler state."""
import logging
import os
from pathlib import Path

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


def save(path, model, optimizer, scheduler, scaler, step: int) -> None:
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "step": step,
    }
    if not dist.is_initialized() or dist.get_rank() == 0:
        tmp = Path(path).with_suffix(".tmp")
        torch.save(state, tmp)  # ok: MLS308
        os.replace(tmp, path)  # ok: MLS308
    if dist.is_initialized():
        dist.barrier()


def latest(ckpt_dir) -> Path | None:
    files = sorted(Path(ckpt_dir).glob("step_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
    return files[-1] if files else None


def _to_device(optimizer) -> None:
    """Move optimizer state tensors next to their params (state is loaded on CPU)."""
    for param, st in optimizer.state.items():
        for key, val in list(st.items()):
            if torch.is_tensor(val) and key != "step":
                st[key] = val.to(param.device, non_blocking=True)
        if "exp_avg_sq" in st:
            # second moments are re-estimated within ~1/(1-beta2) steps after resume
            st["exp_avg_sq"].zero_()  # ruleid: MLS304


def resume(ckpt_dir, model, optimizer, scheduler=None, scaler=None) -> int:
    path = latest(ckpt_dir)
    if path is None:
        return 0
    state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    _to_device(optimizer)
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    if scaler is not None:
        scaler.load_state_dict(state["scaler"])
    log.info("resumed from %s at step %d", path, state["step"])
    return int(state["step"])
