# ruff: noqa
# Hold-out batch 547 (16 short files, one domain each). Measured once in session 24 (round 146): 13/17 (76%) at medium+.
"""Training loop for GTSRB traffic sign classification."""
import logging

import torch
import torch.nn.functional as F
from torch.optim.lr_scheduler import OneCycleLR

log = logging.getLogger(__name__)


def refresh_optimizer_state(optimizer, keys=("exp_avg_sq",)):
    """Drop stale second-moment buffers after the warm restart of the head."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p)
            if not state:
                continue
            for k in keys:
                if k in state:
                    state[k].zero_()  # ruleid: MLS304


def fit(model, train_loader, val_loader, epochs=30, lr=3e-3, weight_decay=5e-4, device="cuda", refresh_every=500):
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = OneCycleLR(optimizer, max_lr=lr, epochs=epochs, steps_per_epoch=len(train_loader), pct_start=0.15)
    step = 0
    for epoch in range(epochs):
        model.train()
        for images, labels in train_loader:
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            loss = F.cross_entropy(model(images), labels, label_smoothing=0.1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()  # ok: MLS302, MLS303, MLS304, MLS305
            step += 1
            if step % refresh_every == 0:
                refresh_optimizer_state(optimizer)
        acc = evaluate(model, val_loader, device)
        log.info("epoch %d step %d lr %.2e val_acc %.4f", epoch, step, scheduler.get_last_lr()[0], acc)
    return model


@torch.no_grad()
def evaluate(model, loader, device):
    model.eval()
    correct = total = 0
    for images, labels in loader:
        pred = model(images.to(device)).argmax(1).cpu()
        correct += (pred == labels).sum().item()
        total += labels.numel()
    return correct / max(total, 1)
