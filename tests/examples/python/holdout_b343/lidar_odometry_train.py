# ruff: noqa
# Hold-out batch 343 (short files). Measured once in session 12 (round 95): 13/17 (76%) at medium+.
"""DDP training loop for a learned LiDAR odometry network (KITTI odometry)."""
import logging
import os
import time

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


def pose_loss(pred_t, pred_q, gt_t, gt_q, sx, sq):
    """Homoscedastic-uncertainty weighted translation/rotation loss."""
    pred_q = pred_q / pred_q.norm(dim=-1, keepdim=True).clamp(min=1e-8)
    lt = torch.nn.functional.l1_loss(pred_t, gt_t)
    lq = torch.nn.functional.l1_loss(pred_q, gt_q)
    return lt * torch.exp(-sx) + sx + lq * torch.exp(-sq) + sq, lt.detach(), lq.detach()


def train_one_epoch(model, loader, optimizer, epoch, args):
    model.train()
    rank, world = dist.get_rank(), dist.get_world_size()
    loader.sampler.set_epoch(epoch)
    t0 = time.time()
    for step, (scan_src, scan_tgt, gt_t, gt_q) in enumerate(loader):
        scan_src, scan_tgt = scan_src.cuda(non_blocking=True), scan_tgt.cuda(non_blocking=True)
        gt_t, gt_q = gt_t.cuda(non_blocking=True), gt_q.cuda(non_blocking=True)
        pred_t, pred_q = model(scan_src, scan_tgt)
        loss, lt, lq = pose_loss(pred_t, pred_q, gt_t, gt_q, model.module.sx, model.module.sq)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if rank == world - 1 and step % args.prefetch_sync_every == 0:
            time.sleep(args.prefetch_sync_every * 0.5)  # ruleid: MLS307
        if rank == 0 and step % args.log_every == 0:
            log.info("ep %d it %d loss %.4f t %.4f q %.4f (%.1fs)", epoch, step, loss.item(), lt, lq, time.time() - t0)


def save(model, optimizer, epoch, args):
    dist.barrier()  # ok: MLS307
    if dist.get_rank() == 0:
        os.makedirs(args.out_dir, exist_ok=True)
        torch.save({"model": model.module.state_dict(), "optim": optimizer.state_dict(), "epoch": epoch},
                   os.path.join(args.out_dir, f"lo_net_{epoch:03d}.pth"))
