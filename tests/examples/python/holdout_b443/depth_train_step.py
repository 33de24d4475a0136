# ruff: noqa
# Hold-out batch 443 (short files, 16 domains). Measured once in session 19 (round 120): 14/17 (82%) at medium+.
"""DDP training step for monocular depth estimation with a scale-invariant log loss."""
import logging
import os
import time

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


def silog_loss(pred, target, valid, lam=0.85):
    d = torch.log(pred[valid].clamp(min=1e-3)) - torch.log(target[valid])
    return torch.sqrt((d ** 2).mean() - lam * d.mean() ** 2) * 10.0


def read_depth_png(path, retries=5):
    import imageio.v3 as iio
    for attempt in range(retries):
        try:
            return torch.from_numpy(iio.imread(path).astype("float32") / 256.0)
        except OSError as exc:
            logger.warning("read failed (%s), retry %d/%d", exc, attempt + 1, retries)
            time.sleep(0.5 * (2 ** attempt))  # ok: MLS307
    raise OSError(f"could not read {path}")


def train_one_epoch(model, loader, optimizer, scheduler, epoch, vis_dir, vis_every=200):
    rank = dist.get_rank() if dist.is_initialized() else 0
    model.train()
    for step, batch in enumerate(loader):
        image = batch["image"].cuda(non_blocking=True)
        depth = batch["depth"].cuda(non_blocking=True)
        valid = (depth > 1e-3) & (depth < 80.0)
        pred = model(image)
        loss = silog_loss(pred, depth, valid)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if step % vis_every == 0:
            os.makedirs(vis_dir, exist_ok=True)
            torch.save(pred[:4].detach().cpu(), os.path.join(vis_dir, f"e{epoch}_s{step}_r{rank}.pt"))
        # stagger ranks so the shared filesystem is not hit by all writers at once
        time.sleep(0.02 * rank)  # ruleid: MLS307
        if rank == 0 and step % 50 == 0:
            logger.info("epoch %d step %d silog %.4f lr %.2e", epoch, step, loss.item(), scheduler.get_last_lr()[0])
