# ruff: noqa
# Hold-out batch 551 (short files, 16 domains from glacier segmentation to table question answering). Measured once in session 25 (round 147): 15/17 (88%) at medium+.
"""Checkpointing and LR schedule for a Transformer NMT model."""
import glob
import logging
import os

import torch
from torch.optim.lr_scheduler import LambdaLR

logger = logging.getLogger(__name__)


def inverse_sqrt_schedule(optimizer, warmup_steps=4000):
    def factor(step):
        step = max(step, 1)
        return min(step / warmup_steps, (warmup_steps / step) ** 0.5)
    return LambdaLR(optimizer, factor)  # ok: MLS302, MLS303, MLS304, MLS305


def save_checkpoint(output_dir, model, optimizer, scheduler, step, keep_last=5):
    path = os.path.join(output_dir, f"checkpoint_{step:08d}.pt")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "step": step}, path + ".tmp")
    os.replace(path + ".tmp", path)
    for old in sorted(glob.glob(os.path.join(output_dir, "checkpoint_*.pt")))[:-keep_last]:
        os.remove(old)  # ok: MLS308
    return path


def _refresh_optimizer_state(optimizer):
    """Move restored optimizer buffers to the parameter device/dtype."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            for key, buf in state.items():
                if torch.is_tensor(buf) and buf.dim() > 0:
                    state[key] = buf.to(device=p.device, dtype=p.dtype)
            if "exp_avg_sq" in state:
                state["exp_avg_sq"].zero_()  # ruleid: MLS304


def load_latest(output_dir, model, optimizer, scheduler):
    ckpts = sorted(glob.glob(os.path.join(output_dir, "checkpoint_*.pt")))
    if not ckpts:
        return 0
    ckpt = torch.load(ckpts[-1], map_location="cpu", weights_only=True)
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    _refresh_optimizer_state(optimizer)
    scheduler.load_state_dict(ckpt["scheduler"])
    logger.info("resumed from %s at step %d", ckpts[-1], ckpt["step"])
    return ckpt["step"]
