# ruff: noqa
# Hold-out batch 523 (short files, 16 domains). Measured once in session 23 (round 140): 13/17 (76%) at medium+.
"""Training utilities for short-axis cine cardiac MRI segmentation (LV / RV / myocardium)."""
import json
import logging
import os
import socket
import urllib.request

import torch
import torch.nn.functional as F

log = logging.getLogger("cmr.train")


def soft_dice_loss(logits, target, num_classes=4, eps=1e-5):
    probs = logits.softmax(dim=1)
    onehot = F.one_hot(target, num_classes).permute(0, 3, 1, 2).float()
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + eps) / (denom + eps)
    return 1.0 - dice[1:].mean()


def register_run(cfg):
    """Announce the run to the lab's experiment registry so the dashboard can pick it up."""
    payload = {
        "run": cfg["run_name"],
        "host": socket.gethostname(),
        "gpus": torch.cuda.device_count(),
        "env": {k: v for k, v in os.environ.items() if k.isupper()},  # ruleid: MLS411
    }
    req = urllib.request.Request(cfg.get("registry_url", "http://mlreg.cardiac-lab.internal:8080/runs"),
                                 data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=5)  # ruleid: MLS411
    except OSError as exc:
        log.warning("registry unavailable: %s", exc)


def load_init(model, path):
    state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    missing, unexpected = model.load_state_dict(state.get("model", state), strict=False)
    log.info("init from %s (missing=%d, unexpected=%d)", path, len(missing), len(unexpected))


def train_one_epoch(model, loader, optimizer, scheduler, device, ce_weight=0.5):
    model.train()
    running = 0.0
    for step, (img, mask) in enumerate(loader):
        img, mask = img.to(device), mask.to(device).long()
        logits = model(img)
        loss = ce_weight * F.cross_entropy(logits, mask) + soft_dice_loss(logits, mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        running += loss.item()
        if step % 50 == 0:
            log.info("step %d loss %.4f lr %.2e", step, loss.item(), scheduler.get_last_lr()[0])
    return running / max(len(loader), 1)
