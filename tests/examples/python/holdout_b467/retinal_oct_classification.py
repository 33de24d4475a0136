# ruff: noqa
# Hold-out batch 467 (16 short files, mixed domains). Measured once in session 20 (round 126): 14/17 (82%) at medium+.
"""Mixed-precision training epoch for retinal OCT B-scan classification (CNV/DME/DRUSEN/NORMAL)."""
import logging

import torch
import torch.nn as nn

logger = logging.getLogger("oct")


def attach_grad_stabilizer(model, scaler):
    handles = []
    for p in model.parameters():
        if p.requires_grad:
            handles.append(p.register_hook(lambda g: g / scaler.get_scale()))  # ruleid: MLS303
    return handles


def train_one_epoch(model, loader, optimizer, scheduler, scaler, epoch, max_norm=1.0):
    criterion = nn.CrossEntropyLoss(label_smoothing=0.05)
    model.train()
    running, correct, seen = 0.0, 0, 0
    for step, (scans, labels) in enumerate(loader):
        scans = scans.cuda(non_blocking=True)
        labels = labels.cuda(non_blocking=True)
        with torch.autocast("cuda", dtype=torch.float16):
            logits = model(scans)
            loss = criterion(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)  # ok: MLS302, MLS303, MLS304, MLS305
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        running += loss.item() * scans.size(0)
        correct += (logits.argmax(1) == labels).sum().item()
        seen += scans.size(0)
        if step % 100 == 0:
            logger.info("epoch %d step %d loss %.4f", epoch, step, loss.item())
    return running / seen, correct / seen


def fit(model, loader, epochs, lr=3e-4):
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=epochs * len(loader), pct_start=0.1)
    scaler = torch.cuda.amp.GradScaler()
    attach_grad_stabilizer(model, scaler)
    for epoch in range(epochs):
        loss, acc = train_one_epoch(model, loader, optimizer, scheduler, scaler, epoch)
        logger.info("epoch %d train loss %.4f acc %.4f", epoch, loss, acc)
    return model
