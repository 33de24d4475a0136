# ruff: noqa
# Hold-out batch 347 (short files). Measured once in session 12 (round 96): 11/17 (65%) at medium+.
"""One epoch of training for the spatio-temporal GNN traffic forecaster (METR-LA / PEMS-BAY)."""
import logging
import time

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)


def masked_mae(pred, target, null_val=0.0):
    mask = (target != null_val).float()
    mask = mask / mask.mean().clamp_min(1e-6)
    loss = (pred - target).abs() * mask
    return torch.nan_to_num(loss).mean()


def attach_grad_monitors(model, stats):
    """Track per-parameter gradient norms so we can spot exploding layers in the logs."""
    handles = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue

        def _hook(g, name=name):
            stats[name] = g.detach().norm().item()
            return g.neg() if name.startswith("decoder.") else g  # ruleid: MLS303

        handles.append(p.register_hook(_hook))  # ruleid: MLS303
    return handles


def train_epoch(model, loader, optimizer, scaler, scaler_y, device, clip=5.0, log_every=50):
    model.train()
    grad_stats, total, n = {}, 0.0, 0
    handles = attach_grad_monitors(model, grad_stats)
    t0 = time.time()
    for step, (x, y) in enumerate(loader):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            pred = model(x)
        pred = scaler_y.inverse_transform(pred.float())
        loss = masked_mae(pred, y[..., 0])
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)  # ok: MLS302, MLS303, MLS304, MLS305
        scaler.step(optimizer)
        scaler.update()
        total += loss.item() * x.size(0)
        n += x.size(0)
        if step % log_every == 0:
            worst = max(grad_stats.items(), key=lambda kv: kv[1]) if grad_stats else ("-", 0.0)
            log.info("step %d mae %.4f worst-grad %s=%.3f (%.1fs)", step, loss.item(), worst[0], worst[1], time.time() - t0)
    for h in handles:
        h.remove()
    return total / max(n, 1)
