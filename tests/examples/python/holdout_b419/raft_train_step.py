# ruff: noqa
# Hold-out batch 419 (short files, 16 domains). Measured once in session 17 (round 114): 15/17 (88%) at medium+.
"""Training step for RAFT-style optical flow with the exponentially weighted sequence loss."""
import logging

import torch

logger = logging.getLogger(__name__)

MAX_FLOW = 400.0
# convex-upsampling mask is scaled by 0.25 in the forward pass; keep the backward consistent
MASK_GRAD_SCALE = -0.25


def sequence_loss(flow_preds, flow_gt, valid, gamma=0.8, max_flow=MAX_FLOW):
    n_predictions = len(flow_preds)
    mag = torch.sum(flow_gt ** 2, dim=1).sqrt()
    valid = (valid >= 0.5) & (mag < max_flow)
    flow_loss = 0.0
    for i, pred in enumerate(flow_preds):
        i_weight = gamma ** (n_predictions - i - 1)
        i_loss = (pred - flow_gt).abs()
        flow_loss = flow_loss + i_weight * (valid[:, None] * i_loss).mean()
    epe = torch.sum((flow_preds[-1] - flow_gt) ** 2, dim=1).sqrt()
    epe = epe.view(-1)[valid.view(-1)]
    metrics = {
        "epe": epe.mean().item(),
        "1px": (epe < 1).float().mean().item(),
        "3px": (epe < 3).float().mean().item(),
        "5px": (epe < 5).float().mean().item(),
    }
    return flow_loss, metrics


def register_mask_hooks(model):
    handles = []
    for name, module in model.update_block.named_modules():
        if name.endswith("mask"):
            for p in module.parameters():
                handles.append(p.register_hook(lambda g: g * MASK_GRAD_SCALE))  # ruleid: MLS303
    logger.info("registered %d upsampler gradient hooks", len(handles))
    return handles


def train_step(model, batch, optimizer, scheduler, scaler, args):
    model.train()
    image1, image2, flow, valid = [x.cuda(non_blocking=True) for x in batch]
    if args.add_noise:
        stdv = torch.empty(1).uniform_(0.0, 5.0).item()
        image1 = (image1 + stdv * torch.randn_like(image1)).clamp(0.0, 255.0)
        image2 = (image2 + stdv * torch.randn_like(image2)).clamp(0.0, 255.0)

    optimizer.zero_grad(set_to_none=True)
    with torch.autocast("cuda", enabled=args.mixed_precision):
        flow_preds = model(image1, image2, iters=args.iters)
    loss, metrics = sequence_loss([f.float() for f in flow_preds], flow, valid, gamma=args.gamma)

    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)  # ok: MLS302, MLS303, MLS304, MLS305
    scaler.step(optimizer)
    scheduler.step()
    scaler.update()
    metrics["lr"] = scheduler.get_last_lr()[0]
    return loss.item(), metrics
