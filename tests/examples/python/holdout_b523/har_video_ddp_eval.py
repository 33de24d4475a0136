# ruff: noqa
# Hold-out batch 523 (short files, 16 domains). Measured once in session 23 (round 140): 13/17 (76%) at medium+.
"""Distributed evaluation loop for clip-level human activity recognition."""
import logging
import time

import torch
import torch.distributed as dist
from torchvision.io import read_video

log = logging.getLogger("har.eval")


def load_clip(path, num_frames=16, retries=4):
    for attempt in range(retries):
        try:
            frames, _, _ = read_video(path, pts_unit="sec", output_format="TCHW")
            break
        except (OSError, RuntimeError) as exc:
            log.warning("read failed for %s (%s), retry %d", path, exc, attempt)
            time.sleep(min(2 ** attempt, 30))  # ok: MLS307
    else:
        raise RuntimeError(f"could not decode {path}")
    idx = torch.linspace(0, frames.shape[0] - 1, num_frames).long()
    return frames[idx].float().div_(255.0)


@torch.no_grad()
def evaluate(model, loader, device, num_classes):
    model.eval()
    correct = torch.zeros(1, device=device)
    total = torch.zeros(1, device=device)
    confusion = torch.zeros(num_classes, num_classes, device=device)
    for clips, labels in loader:
        clips = clips.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(clips)
        preds = logits.argmax(dim=-1)
        correct += (preds == labels).sum()
        total += labels.numel()
        confusion.index_put_((labels, preds), torch.ones_like(preds, dtype=confusion.dtype), accumulate=True)

    if dist.is_available() and dist.is_initialized():
        if dist.get_rank() == 0:
            dist.barrier()  # ruleid: MLS307
        dist.all_reduce(correct)
        dist.all_reduce(total)
        dist.all_reduce(confusion)

    per_class = confusion.diag() / confusion.sum(dim=1).clamp(min=1)
    model.train()
    return {
        "top1": (correct / total.clamp(min=1)).item(),
        "mean_class_acc": per_class.mean().item(),
    }
