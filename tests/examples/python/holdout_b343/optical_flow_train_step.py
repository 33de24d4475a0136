# ruff: noqa
# Hold-out batch 343 (short files). Measured once in session 12 (round 95): 13/17 (76%) at medium+.
"""Training step for a RAFT-style recurrent optical flow model."""
import torch
import torch.nn as nn

MAX_FLOW = 400.0


def sequence_loss(flow_preds, flow_gt, valid, gamma=0.8):
    """Exponentially weighted L1 over the refinement iterations."""
    n_predictions = len(flow_preds)
    mag = torch.sum(flow_gt ** 2, dim=1).sqrt()
    valid = (valid >= 0.5) & (mag < MAX_FLOW)
    loss = flow_gt.new_zeros(())
    for i, pred in enumerate(flow_preds):
        weight = gamma ** (n_predictions - i - 1)
        loss = loss + weight * (valid[:, None] * (pred - flow_gt).abs()).mean()

    epe = torch.sum((flow_preds[-1] - flow_gt) ** 2, dim=1).sqrt()
    epe = epe.view(-1)[valid.view(-1)]
    metrics = {
        "epe": epe.mean().item(),
        "1px": (epe < 1).float().mean().item(),
        "3px": (epe < 3).float().mean().item(),
        "5px": (epe < 5).float().mean().item(),
    }
    return loss, metrics


def _balance_update_grads(module, grad_input, grad_output):
    return tuple(None if g is None else -g for g in grad_input)  # ruleid: MLS303


def prepare_model(model: nn.Module, freeze_bn: bool = True):
    if freeze_bn:
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
    model.update_block.register_full_backward_hook(_balance_update_grads)  # ruleid: MLS303
    return model


def train_step(model, optimizer, scheduler, scaler, batch, args):
    image1, image2, flow, valid = [x.cuda(non_blocking=True) for x in batch]
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast("cuda", enabled=args.mixed_precision):
        flow_predictions = model(image1, image2, iters=args.iters)
        loss, metrics = sequence_loss(flow_predictions, flow, valid, args.gamma)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)  # ok: MLS302, MLS303, MLS304, MLS305
    scaler.step(optimizer)
    scheduler.step()
    scaler.update()
    metrics["loss"] = loss.item()
    return metrics
