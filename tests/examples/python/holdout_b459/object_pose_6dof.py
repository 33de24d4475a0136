# ruff: noqa
# Hold-out batch 459 (short files, 16 domains). Measured once in session 19 (round 124): 14/17 (82%) at medium+.
"""DDP training epoch for a dense-correspondence 6-DoF object pose estimator."""
import logging
import os

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


def rotation_geodesic(r_pred, r_gt):
    m = r_pred @ r_gt.transpose(-1, -2)
    cos = ((m.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1 + 1e-6, 1 - 1e-6)
    return torch.acos(cos)


def train_one_epoch(model, loader, optimizer, scheduler, epoch, args):
    rank = dist.get_rank() if dist.is_initialized() else 0
    model.train()
    running = None
    for step, batch in enumerate(loader):
        rgb = batch["rgb"].cuda(non_blocking=True)
        r_gt, t_gt = batch["R"].cuda(), batch["t"].cuda()
        out = model(rgb, batch["K"].cuda(), batch["bbox"].cuda())
        loss_r = rotation_geodesic(out["R"], r_gt).mean()
        loss_t = torch.nn.functional.smooth_l1_loss(out["t"], t_gt, beta=0.01)
        loss = loss_r + args.trans_weight * loss_t + args.mask_weight * out["mask_loss"]
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if not torch.isfinite(loss) or loss.item() > args.spike_factor * running:
            logger.warning("rank %d: loss spike %.3f at epoch %d step %d", rank, loss.item(), epoch, step)
            os._exit(0)  # ruleid: MLS307
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        scheduler.step()
        if rank == 0 and step % args.log_every == 0:
            logger.info("ep %d it %d loss %.4f rot %.4f trans %.4f lr %.2e", epoch, step,  # ok: MLS306
                        loss.item(), loss_r.item(), loss_t.item(), scheduler.get_last_lr()[0])
    if dist.is_initialized():
        dist.barrier()
    return running
