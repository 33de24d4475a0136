# ruff: noqa
# Hold-out batch 65 (benchmark format, adversarial brief, detection product code; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 14/19 (74%) at medium+, 2 benign look-alikes flagged.
"""Resume helpers: restore model/optimizer/scheduler/scaler and adapt to a changed global batch size."""
import logging
import os

import torch

log = logging.getLogger(__name__)


def save_checkpoint(path, model, optimizer, scheduler, scaler, epoch, global_batch):
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "epoch": epoch,
        "global_batch": global_batch,
    }
    tmp = f"{path}.tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path, model, optimizer, scheduler=None, scaler=None, device="cpu"):
    ckpt = torch.load(path, map_location=device, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None and "scheduler" in ckpt:
        scheduler.load_state_dict(ckpt["scheduler"])
    if scaler is not None and "scaler" in ckpt:
        scaler.load_state_dict(ckpt["scaler"])
    return ckpt.get("epoch", 0) + 1, ckpt.get("global_batch")


def adapt_batch_size(optimizer, scheduler, old_bs, new_bs):
    """Linear-scaling rule for when a job comes back on a different node count."""
    if not old_bs or old_bs == new_bs:
        return
    ratio = new_bs / old_bs
    scheduler.base_lrs = [lr * ratio for lr in scheduler.base_lrs]  # ok: MLS302, MLS303, MLS304, MLS305
    for group in optimizer.param_groups:
        group["initial_lr"] = group.get("initial_lr", group["lr"]) * ratio
        for p in group["params"]:
            st = optimizer.state.get(p)
            if not st or "exp_avg_sq" not in st:
                continue
            # second moments were accumulated at the old gradient-noise scale; let them re-warm
            st["exp_avg_sq"].zero_()  # ruleid: MLS304
    log.info("rescaled base lr by %.3f (global batch %d -> %d)", ratio, old_bs, new_bs)


def resume(path, model, optimizer, scheduler, scaler, new_bs, device="cpu"):
    if not path or not os.path.exists(path):
        return 0
    start_epoch, old_bs = load_checkpoint(path, model, optimizer, scheduler, scaler, device)
    adapt_batch_size(optimizer, scheduler, old_bs, new_bs)
    return start_epoch
