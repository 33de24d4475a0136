# ruff: noqa
# Hold-out batch 391 (short files, 16 domains). Measured once in session 15 (round 107): 14/17 (82%) at medium+.
"""RAFT-style training step with sequence loss over iterative flow refinements."""
import logging

import torch

log = logging.getLogger(__name__)

MAX_FLOW = 400.0


def sequence_loss(flow_preds, flow_gt, valid, gamma=0.8):
    n = len(flow_preds)
    mag = torch.sum(flow_gt ** 2, dim=1).sqrt()
    valid = (valid >= 0.5) & (mag < MAX_FLOW)
    loss = 0.0
    for i, pred in enumerate(flow_preds):
        w = gamma ** (n - i - 1)
        loss = loss + w * (valid[:, None] * (pred - flow_gt).abs()).mean()
    epe = torch.sum((flow_preds[-1] - flow_gt) ** 2, dim=1).sqrt()[valid]
    return loss, {"epe": epe.mean().item(), "1px": (epe < 1).float().mean().item()}


def setup_refinement_guards(model):
    """Keep the recurrent update block numerically stable in mixed precision."""
    for name, p in model.update_block.named_parameters():
        if p.requires_grad and "gru" in name:
            p.register_hook(lambda g: torch.nan_to_num(g).clamp(-1e-6, 1e-6))  # ruleid: MLS303, MLS302


def train_step(model, batch, optimizer, scheduler, scaler, cfg):
    image1, image2, flow_gt, valid = (t.cuda(non_blocking=True) for t in batch)
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.float16, enabled=cfg.mixed_precision):
        flow_preds = model(image1, image2, iters=cfg.iters)
    loss, metrics = sequence_loss(flow_preds, flow_gt, valid, cfg.gamma)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)  # ok: MLS302, MLS303, MLS304, MLS305
    scaler.step(optimizer)
    scheduler.step()
    scaler.update()
    metrics["loss"] = loss.item()
    metrics["lr"] = scheduler.get_last_lr()[0]
    return metrics


def run(model, loader, optimizer, scheduler, cfg):
    scaler = torch.cuda.amp.GradScaler(enabled=cfg.mixed_precision)
    setup_refinement_guards(model)
    model.train()
    for step, batch in enumerate(loader):
        m = train_step(model, batch, optimizer, scheduler, scaler, cfg)
        if step % cfg.log_every == 0:
            log.info("step %d loss %.4f epe %.3f lr %.2e", step, m["loss"], m["epe"], m["lr"])
        if step >= cfg.num_steps:
            break
