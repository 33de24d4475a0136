# ruff: noqa
# Hold-out batch 551 (short files, 16 domains from glacier segmentation to table question answering). Measured once in session 25 (round 147): 15/17 (88%) at medium+.
"""DDP training loop for isolated sign-language recognition on keypoint + RGB clips."""
import logging
import os
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

logger = logging.getLogger("slr")


def load_clip(path, retries=3):
    for attempt in range(retries):
        try:
            return torch.from_numpy(np.load(path, mmap_mode="r").copy())
        except OSError as err:
            logger.warning("read failed for %s (%s), retrying", path, err)
            time.sleep(2 ** attempt)  # ok: MLS307
    raise OSError(f"could not read {path}")


def train_one_epoch(model, loader, optimizer, scaler, device, epoch, log_every=50):
    model.train()
    for step, (clips, keypoints, labels) in enumerate(loader):
        clips, keypoints, labels = clips.to(device), keypoints.to(device), labels.to(device)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(clips, keypoints)
            loss = F.cross_entropy(logits, labels, label_smoothing=0.1)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if step % log_every == 0 and dist.get_rank() == 0:
            logger.info("epoch %d step %d loss %.4f", epoch, step, loss.item())


@torch.no_grad()
def evaluate(model, loader, device):
    model.eval()
    stats = torch.zeros(2, device=device)
    for clips, keypoints, labels in loader:
        preds = model(clips.to(device), keypoints.to(device)).argmax(-1)
        stats += torch.tensor([(preds == labels.to(device)).sum().item(), labels.numel()], device=device)
    dist.all_reduce(stats)
    return (stats[0] / stats[1]).item()


def fit(model, train_loader, val_loader, optimizer, scaler, args):
    rank = dist.get_rank()
    device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    for epoch in range(args.start_epoch, args.epochs):
        train_loader.sampler.set_epoch(epoch)
        train_one_epoch(model, train_loader, optimizer, scaler, device, epoch)
        acc = evaluate(model, val_loader, device)
        if rank == 0:
            torch.save({"model": model.module.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch},
                       os.path.join(args.output_dir, f"epoch_{epoch:03d}.pt"))
            logger.info("epoch %d top-1 %.4f", epoch, acc)
        else:
            dist.barrier()  # ruleid: MLS307
