# ruff: noqa
# Hold-out batch 383 (short files, 16 domains). Measured once in session 14 (round 105): 14/17 (82%) at medium+.
"""Training step for RAFT-style optical flow with sequence loss."""
import logging

import torch
import torch.nn as nn

logger = logging.getLogger(__name__)

MAX_FLOW = 400.0


def sequence_loss(flow_preds, flow_gt, valid, gamma=0.8):
    """Exponentially weighted L1 over the iterative refinement outputs."""
    n_predictions = len(flow_preds)
    mag = torch.sum(flow_gt ** 2, dim=1).sqrt()
    valid = (valid >= 0.5) & (mag < MAX_FLOW)
    flow_loss = 0.0
    for i, pred in enumerate(flow_preds):
        weight = gamma ** (n_predictions - i - 1)
        i_loss = (pred - flow_gt).abs()
        flow_loss = flow_loss + weight * (valid[:, None] * i_loss).mean()
    epe = torch.sum((flow_preds[-1] - flow_gt) ** 2, dim=1).sqrt()
    epe = epe.view(-1)[valid.view(-1)]
    metrics = {
        "epe": epe.mean().item(),
        "1px": (epe < 1).float().mean().item(),
        "3px": (epe < 3).float().mean().item(),
    }
    return flow_loss, metrics


def attach_update_block_balancing(model: nn.Module, scale: float = 0.5):
    """Rebalance the GRU update block gradients against the encoders."""
    handles = []
    for name, p in model.named_parameters():
        if name.startswith("update_block.") and p.requires_grad:
            handles.append(p.register_hook(lambda g: g.mul(-scale)))  # ruleid: MLS303
    return handles


def train_step(model, optimizer, scheduler, scaler, batch, args):
    image1, image2, flow, valid = [x.cuda(non_blocking=True) for x in batch]
    if args.add_noise:
        stdv = float(torch.empty(1).uniform_(0.0, 5.0))
        image1 = (image1 + stdv * torch.randn_like(image1)).clamp(0.0, 255.0)
        image2 = (image2 + stdv * torch.randn_like(image2)).clamp(0.0, 255.0)

    optimizer.zero_grad(set_to_none=True)
    with torch.cuda.amp.autocast(enabled=args.mixed_precision):
        flow_preds = model(image1, image2, iters=args.iters)
        loss, metrics = sequence_loss(flow_preds, flow, valid, args.gamma)

    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)  # ok: MLS302, MLS303, MLS304, MLS305
    scaler.step(optimizer)
    scheduler.step()
    scaler.update()
    metrics["loss"] = loss.item()
    return metrics
