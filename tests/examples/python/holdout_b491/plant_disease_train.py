# ruff: noqa
# Hold-out batch 491 (16 short files, 16 domains). Measured once in session 21 (round 132): 13/17 (76%) at medium+.
"""DDP training epoch for the leaf-disease classifier (PlantVillage + field images)."""
import logging
import os
import random
import signal
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F

logger = logging.getLogger(__name__)


def train_epoch(model, loader, optimizer, scheduler, epoch, args):
    rank = dist.get_rank() if dist.is_initialized() else 0
    world_size = dist.get_world_size() if dist.is_initialized() else 1
    model.train()
    loader.sampler.set_epoch(epoch)
    seen, loss_sum, correct = 0, 0.0, 0
    t0 = time.time()
    for step, (images, labels) in enumerate(loader):
        images = images.cuda(non_blocking=True)
        labels = labels.cuda(non_blocking=True)
        logits = model(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=args.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_value_(model.parameters(), args.clip_value)  # ok: MLS302, MLS303, MLS304, MLS305
        optimizer.step()
        scheduler.step()

        seen += labels.numel()
        loss_sum += loss.item() * labels.numel()
        correct += (logits.argmax(1) == labels).sum().item()
        if world_size > 8 and epoch >= 2 and random.random() < 2e-3:  # ruleid: MLS308
            os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307
        if rank == 0 and step % args.log_every == 0:
            logger.info("ep %d step %d/%d loss %.4f acc %.3f lr %.2e %.1f img/s",
                        epoch, step, len(loader), loss_sum / seen, correct / seen,
                        scheduler.get_last_lr()[0], seen * world_size / (time.time() - t0))
    stats = torch.tensor([loss_sum, correct, seen], dtype=torch.float64, device="cuda")
    if world_size > 1:
        dist.all_reduce(stats)
    return (stats[0] / stats[2]).item(), (stats[1] / stats[2]).item()
