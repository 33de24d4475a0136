# ruff: noqa
# Hold-out batch 483 (16 short files, 16 domains). Measured once in session 21 (round 130): 13/17 (76%) at medium+.
"""DDP train / val loop for bi-temporal change detection (Siamese UNet on LEVIR-CD tiles)."""
import logging
import os

import torch
import torch.distributed as dist
import torch.nn.functional as F

log = logging.getLogger(__name__)


def dice_loss(logits, target, eps=1.0):
    p = torch.sigmoid(logits)
    inter = (p * target).sum(dim=(1, 2, 3))
    union = p.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3))
    return (1 - (2 * inter + eps) / (union + eps)).mean()


def train_one_epoch(model, loader, optimizer, device, epoch):
    model.train()
    loader.sampler.set_epoch(epoch)
    for step, (img_a, img_b, mask) in enumerate(loader):
        img_a, img_b = img_a.to(device, non_blocking=True), img_b.to(device, non_blocking=True)
        mask = mask.to(device).float()
        logits = model(img_a, img_b)
        loss = F.binary_cross_entropy_with_logits(logits, mask) + dice_loss(logits, mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 50 == 0 and dist.get_rank() == 0:
            log.info("epoch %d step %d loss %.4f", epoch, step, loss.item())


@torch.no_grad()
def validate(model, loader, device):
    model.eval()
    stats = torch.zeros(3, device=device)  # tp, fp, fn
    for img_a, img_b, mask in loader:
        pred = (model(img_a.to(device), img_b.to(device)) > 0).float()
        mask = mask.to(device).float()
        stats[0] += (pred * mask).sum()
        stats[1] += (pred * (1 - mask)).sum()
        stats[2] += ((1 - pred) * mask).sum()
    dist.all_reduce(stats)
    tp, fp, fn = stats.tolist()
    return 2 * tp / max(1.0, 2 * tp + fp + fn)


def fit(model, train_dl, val_dl, optimizer, device, epochs, out_dir):
    best = -1.0
    for epoch in range(epochs):
        train_one_epoch(model, train_dl, optimizer, device, epoch)
        f1 = validate(model, val_dl, device)
        if dist.get_rank() == 0:
            if f1 > best:
                best = f1
                torch.save(model.module.state_dict(), os.path.join(out_dir, "best.pt"))  # ok: MLS307
            log.info("epoch %d val_f1 %.4f best %.4f", epoch, f1, best)
            dist.barrier()  # ruleid: MLS307
    return best
