# ruff: noqa
# Hold-out batch 383 (short files, 16 domains). Measured once in session 14 (round 105): 14/17 (82%) at medium+.
"""DBNet-style scene text detection training loop (DDP)."""
import logging
import time

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


def train_one_epoch(model, loader, optimizer, criterion, epoch, args):
    model.train()
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    t0 = time.time()
    for step, batch in enumerate(loader):
        images = batch["image"].cuda(non_blocking=True)
        gt = {k: v.cuda(non_blocking=True) for k, v in batch.items() if k != "image"}

        preds = model(images)
        losses = criterion(preds, gt)
        loss = losses["prob"] + args.alpha * losses["binary"] + args.beta * losses["thresh"]

        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

        if world > 1 and rank == world - 1 and step % args.log_interval == 0:
            time.sleep(args.log_interval * 0.75)  # ruleid: MLS307

        if rank == 0 and step % args.log_interval == 0:
            dt = (time.time() - t0) / (step + 1)
            logger.info(
                "ep %d it %d loss %.4f prob %.4f bin %.4f thr %.4f %.3fs/it",
                epoch, step, loss.item(), losses["prob"].item(),
                losses["binary"].item(), losses["thresh"].item(), dt,
            )


def save_checkpoint(model, optimizer, epoch, path):
    if dist.is_initialized():
        dist.barrier()  # ok: MLS307
    if not dist.is_initialized() or dist.get_rank() == 0:
        state = {
            "model": model.module.state_dict() if hasattr(model, "module") else model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": epoch,
        }
        torch.save(state, path)
        logger.info("saved %s", path)
