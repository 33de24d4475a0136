# ruff: noqa
# Hold-out batch 227 (short files). Measured once in session 8 (round 66): 18/20 (90%) at medium+.
"""Train a small depthwise-separable CNN keyword spotter with mixup, warmup and weight EMA."""
import copy
import math
import signal
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from kws_data import KeywordDataset, make_loader, LABELS

SEED, EPOCHS, BASE_LR, WARMUP = 0, 60, 3e-3, 500


def ds_block(cin, cout, stride):
    return nn.Sequential(nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU(),
                         nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


def main():
    torch.manual_seed(SEED)  # ok: MLS301
    np.random.seed(SEED)  # ok: MLS301
    model = nn.Sequential(nn.Conv2d(1, 64, 3, 2, 1), ds_block(64, 64, 1), ds_block(64, 128, 2), ds_block(128, 128, 1),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, len(LABELS))).cuda()
    ema = copy.deepcopy(model).eval()
    opt = torch.optim.AdamW(model.parameters(), lr=BASE_LR, weight_decay=0.05)
    scaler = torch.cuda.amp.GradScaler()
    train = make_loader(KeywordDataset("data/sc", "data/sc/train.txt", noise_dir="data/sc/_background_noise_"), 256, SEED)
    total = EPOCHS * len(train)
    signal.signal(signal.SIGTERM, lambda *_: (torch.save(ema.state_dict(), "kws_ema_preempt.pt"), sys.exit(0)))  # ok: MLS307
    step, best, stale = 0, float("inf"), 0
    for epoch in range(EPOCHS):
        running = 0.0
        for x, y in train:
            x, y = x.cuda(), y.cuda()
            lr = BASE_LR * min(1.0, (step + 1) / WARMUP) * 0.5 * (1 + math.cos(math.pi * step / total))
            for g in opt.param_groups:
                g["lr"] = lr  # ok: MLS302, MLS303, MLS304, MLS305
            lam = float(np.random.beta(0.4, 0.4))
            perm = torch.randperm(x.size(0), device=x.device)
            x = lam * x + (1 - lam) * x[perm]  # ok: MLS309
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits = model(x)
                loss = lam * F.cross_entropy(logits, y, label_smoothing=0.1) + (1 - lam) * F.cross_entropy(logits, y[perm], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)
            scaler.update()
            with torch.no_grad():
                for pe, pm in zip(ema.parameters(), model.parameters()):
                    pe.mul_(0.999).add_(pm.detach(), alpha=0.001)  # ok: MLS302, MLS303, MLS304, MLS305
            running += loss.item()
            step += 1
        avg = running / len(train)
        print(f"epoch {epoch} train_loss {avg:.4f} lr {lr:.2e}")
        if avg < best - 1e-3:
            best, stale = avg, 0
            torch.save(ema.state_dict(), "kws_ema_best.pt")
        elif (stale := stale + 1) >= 8:
            break  # ok: MLS307


if __name__ == "__main__":
    main()
