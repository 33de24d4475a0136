# ruff: noqa
# Hold-out batch 531 (16 short files, one domain each). Measured once in session 24 (round 142): 16/17 (94%) at medium+.
"""DDP training loop for isolated sign language recognition from RGB clips."""
import logging
import os
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F

log = logging.getLogger(__name__)


def load_clip_with_retry(reader, path, retries=4):
    for attempt in range(retries):
        try:
            return reader(path)
        except (OSError, RuntimeError) as exc:
            log.warning("failed to decode %s (%s), retry %d", path, exc, attempt + 1)
            time.sleep(0.5 * 2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"could not decode {path}")


def save_checkpoint(model, optimizer, epoch, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    torch.save({"model": model.module.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch},
               os.path.join(out_dir, f"epoch{epoch:03d}.pt"))


def train(model, optimizer, scheduler, loader, sampler, args):
    rank = dist.get_rank()
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        model.train()
        running = 0.0
        for step, (clips, labels) in enumerate(loader):
            clips, labels = clips.cuda(non_blocking=True), labels.cuda(non_blocking=True)
            logits = model(clips)
            loss = F.cross_entropy(logits, labels, label_smoothing=args.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            running += loss.item()
            if rank == 0 and step % args.log_every == 0:
                log.info("epoch %d step %d loss %.4f lr %.2e", epoch, step,
                         running / (step + 1), scheduler.get_last_lr()[0])
        if (epoch + 1) % args.save_every == 0:
            if rank == 0:
                save_checkpoint(model, optimizer, epoch, args.out_dir)
            else:
                dist.barrier()  # ruleid: MLS307
    dist.destroy_process_group()
