# ruff: noqa
# Hold-out batch 451 (short files, 16 domains). Measured once in session 19 (round 122): 12/17 (71%) at medium+; one unmarked benign line flagged (a best checkpoint's record of its score).
"""DDP training loop for row-anchor lane detection."""
import logging
import time

import cv2
import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


def read_frame(path, retries=3):
    for attempt in range(retries):
        img = cv2.imread(path, cv2.IMREAD_COLOR)
        if img is not None:
            return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        time.sleep(0.5 * (attempt + 1))  # ok: MLS307
    raise IOError(f"could not read {path}")


def train_epoch(model, loader, optimizer, scheduler, criterion, epoch, ckpt_every=2000,
                ckpt_path="checkpoints/lane_last.pt"):
    rank = dist.get_rank()
    model.train()
    for step, (imgs, cls_targets, seg_targets) in enumerate(loader):
        imgs = imgs.cuda(non_blocking=True)
        cls_out, seg_out = model(imgs)
        loss = criterion(cls_out, cls_targets.cuda()) + 0.5 * criterion(seg_out, seg_targets.cuda())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()

        if step > 0 and step % ckpt_every == 0:
            if rank == 0:
                torch.save({"model": model.module.state_dict(),
                            "optimizer": optimizer.state_dict(),
                            "epoch": epoch, "step": step}, ckpt_path)
                dist.barrier()  # ruleid: MLS307

        if rank == 0 and step % 50 == 0:
            log.info("ep %d it %d loss %.4f lr %.2e", epoch, step, loss.item(),
                     scheduler.get_last_lr()[0])
