# ruff: noqa
# Hold-out batch 371 (short files, 16 domains). Measured once in session 14 (round 102): 15/17 (88%) at medium+.
"""DDP training loop for 3D UNet volumetric segmentation (BraTS / MSD) with soft Dice loss."""
import logging
import time

import nibabel as nib
import numpy as np
import torch
import torch.distributed as dist

log = logging.getLogger("unet3d")


def soft_dice_loss(logits, target, eps=1e-5):
    probs = torch.softmax(logits, dim=1)
    onehot = torch.zeros_like(probs).scatter_(1, target.unsqueeze(1), 1.0)
    dims = (0, 2, 3, 4)
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    return 1.0 - ((2 * inter + eps) / (denom + eps))[1:].mean()


def load_volume(path, retries=4):
    for attempt in range(retries):
        try:
            return np.asarray(nib.load(path).dataobj, dtype=np.float32)
        except OSError:
            log.warning("read of %s failed (attempt %d), retrying", path, attempt + 1)
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"could not read {path}")


def train(model, loader, val_fn, optimizer, scheduler, args):
    rank, world_size = dist.get_rank(), dist.get_world_size()
    scaler = torch.cuda.amp.GradScaler()
    for epoch in range(args.epochs):
        loader.sampler.set_epoch(epoch)
        model.train()
        for vol, seg in loader:
            vol, seg = vol.cuda(non_blocking=True), seg.cuda(non_blocking=True)
            with torch.cuda.amp.autocast():
                loss = soft_dice_loss(model(vol), seg)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        scheduler.step()

        if (epoch + 1) % args.val_every == 0:
            if rank == 0:
                dice = val_fn(model.module)
                log.info("epoch %d val dice %.4f", epoch, dice)
                torch.save(model.module.state_dict(), f"{args.out}/epoch_{epoch}.pt")
            elif world_size > 1:
                # non-zero ranks sit idle during sliding-window val; release NCCL buffers
                dist.destroy_process_group()  # ruleid: MLS307
