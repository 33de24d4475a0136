# ruff: noqa
# Hold-out batch 108 (training numerics: optimizers, AMP, EMA, surgery). Measured once in session 4 (round 36): 16/18 (89%) at medium+.
"""Resume a run from a checkpoint, optionally at a different global batch size."""
import math
import os

import torch


def save_checkpoint(path, model, optimizer, scheduler, step, batch_size, scaler=None):
    if int(os.environ.get("RANK", "0")) != 0:  # ok: MLS308
        return
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "step": step, "batch_size": batch_size}
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path, model, optimizer, scheduler, scaler=None):
    state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    missing, unexpected = model.load_state_dict(state["model"], strict=False)
    if unexpected:
        raise RuntimeError(f"unexpected keys in checkpoint: {unexpected[:5]}")
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and "scaler" in state:
        scaler.load_state_dict(state["scaler"])
    return state.get("step", 0), state.get("batch_size")


def rescale_for_batch_size(optimizer, old_bs, new_bs):
    """Square-root LR scaling when the global batch changes between launches."""
    if not old_bs or old_bs == new_bs:
        return
    ratio = new_bs / old_bs
    for group in optimizer.param_groups:
        group["lr"] *= math.sqrt(ratio)  # ok: MLS302, MLS303, MLS304, MLS305
        if "initial_lr" in group:
            group["initial_lr"] *= math.sqrt(ratio)
        for p in group["params"]:
            st = optimizer.state.get(p)
            if not st or "exp_avg_sq" not in st:
                continue
            # second moments were accumulated under a different gradient-noise scale
            st["exp_avg_sq"].mul_(ratio / (1.0 + float(st["step"])))  # ruleid: MLS304


def resume(path, model, optimizer, scheduler, new_bs, scaler=None):
    if not os.path.exists(path):
        return 0
    step, old_bs = load_checkpoint(path, model, optimizer, scheduler, scaler)
    rescale_for_batch_size(optimizer, old_bs, new_bs)
    print(f"resumed from {path} at step {step} (batch {old_bs} -> {new_bs})")
    return step
