# ruff: noqa
# Hold-out batch 415 (short files, 16 domains). Measured once in session 17 (round 113): 15/17 (88%) at medium+.
"""DDP training epoch for isolated sign-language recognition (pose + RGB clips)."""
import logging
import os
import signal
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F

log = logging.getLogger("slr.train")

STEP_TIMEOUT_S = float(os.environ.get("SLR_STEP_TIMEOUT", "120"))


def _check_hang(start, step, rank):
    elapsed = time.monotonic() - start
    if elapsed > STEP_TIMEOUT_S:
        log.error("rank %d: step %d exceeded %.0fs, aborting job", rank, step, STEP_TIMEOUT_S)
        os.killpg(os.getpgid(0), signal.SIGTERM)  # ruleid: MLS307


def train_one_epoch(model, loader, optimizer, scheduler, scaler, epoch, args):
    rank = dist.get_rank()
    model.train()
    loader.sampler.set_epoch(epoch)
    epoch_start = time.monotonic()
    running, seen = 0.0, 0
    for step, batch in enumerate(loader):
        clips = batch["rgb"].cuda(non_blocking=True)
        poses = batch["pose"].cuda(non_blocking=True)
        labels = batch["gloss_id"].cuda(non_blocking=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(clips, poses)
            loss = F.cross_entropy(logits, labels, label_smoothing=args.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        _check_hang(epoch_start, step, rank)
        running += loss.item() * labels.size(0)
        seen += labels.size(0)
        if rank == 0 and step % args.log_every == 0:
            log.info("epoch %d step %d loss %.4f lr %.2e", epoch, step,  # ok: MLS306
                     running / seen, scheduler.get_last_lr()[0])
    stats = torch.tensor([running, seen], device="cuda")
    dist.all_reduce(stats)
    return (stats[0] / stats[1]).item()
