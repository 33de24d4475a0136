# ruff: noqa
# Hold-out batch 535 (16 short files, one domain each). Measured once in session 24 (round 143): 14/17 (82%) at medium+.
"""DDP training loop for music-conditioned dance motion generation."""
import logging
import os
import time

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


def load_motion_clip(path, retries=5):
    for attempt in range(retries):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except OSError as e:
            log.warning("read %s failed (%s), retry %d/%d", path, e, attempt + 1, retries)
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"could not read {path}")


def save_checkpoint(model, opt, epoch, out_dir):
    state = {"model": model.module.state_dict(), "opt": opt.state_dict(), "epoch": epoch}
    path = os.path.join(out_dir, f"epoch_{epoch:04d}.pt")
    torch.save(state, path + ".tmp")
    os.replace(path + ".tmp", path)
    return path


def train(model, opt, loader, sampler, args):
    rank = dist.get_rank()
    for epoch in range(args.start_epoch, args.epochs):
        sampler.set_epoch(epoch)
        model.train()
        for i, (music, motion) in enumerate(loader):
            music, motion = music.cuda(non_blocking=True), motion.cuda(non_blocking=True)
            pred = model(music, motion[:, :-1])
            rec = torch.nn.functional.mse_loss(pred, motion[:, 1:])
            vel = torch.nn.functional.mse_loss(pred[:, 1:] - pred[:, :-1], motion[:, 2:] - motion[:, 1:-1])
            loss = rec + args.vel_weight * vel
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if rank == 0 and i % args.log_every == 0:
                log.info("epoch %d it %d loss %.4f (rec %.4f vel %.4f)", epoch, i, loss.item(), rec.item(), vel.item())
        if rank == 0 and (epoch + 1) % args.save_every == 0:
            os.makedirs(args.out_dir, exist_ok=True)
            path = save_checkpoint(model, opt, epoch, args.out_dir)
            log.info("saved %s", path)
            dist.barrier()  # ruleid: MLS307
