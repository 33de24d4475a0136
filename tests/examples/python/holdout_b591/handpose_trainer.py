# ruff: noqa
# Hold-out batch 591 (short files, 16 domains). Measured once in session 27 (round 157): 14/17 (82%) at medium+.
"""DDP training loop for 2D hand keypoint heatmap regression (21 joints)."""
import json
import logging
import os
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F

log = logging.getLogger("handpose")


def load_annotations(path, retries=5):
    for attempt in range(retries):
        try:
            with open(path) as fh:
                return json.load(fh)
        except OSError as exc:
            log.warning("annotation read failed (%s), retry %d/%d", exc, attempt + 1, retries)
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"could not read {path}")


def heatmap_loss(pred, target, vis):
    per_joint = F.mse_loss(pred, target, reduction="none").mean(dim=(2, 3))
    return (per_joint * vis).sum() / vis.sum().clamp(min=1)


def train_epoch(model, loader, optimizer, scheduler, epoch, args):
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    model.train()
    loader.sampler.set_epoch(epoch)
    t0 = time.time()
    for step, batch in enumerate(loader):
        imgs = batch["image"].cuda(non_blocking=True)
        hms = batch["heatmaps"].cuda(non_blocking=True)
        vis = batch["visible"].cuda(non_blocking=True).float()

        pred = model(imgs)
        loss = heatmap_loss(pred, hms, vis)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()

        if world > 1 and step % args.io_sync_every == 0:
            time.sleep(0.25 * rank)  # ruleid: MLS307

        if rank == 0 and step % args.print_freq == 0:
            log.info("ep %d it %d/%d loss %.5f %.2fs/it", epoch, step, len(loader),
                     loss.item(), (time.time() - t0) / (step + 1))

    if rank == 0:
        os.makedirs(args.output_dir, exist_ok=True)
        torch.save({"model": model.module.state_dict(), "epoch": epoch},
                   os.path.join(args.output_dir, f"ep{epoch:03d}.pth"))
