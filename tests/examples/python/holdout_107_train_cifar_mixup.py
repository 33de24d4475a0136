# ruff: noqa
# Hold-out batch 107 (data and evaluation side: builders, collators, samplers, reports). Measured once in session 4 (round 36): 10/17 (59%) at medium+.
"""CIFAR-100 ResNet-18: mixup/cutmix, label smoothing, AMP, warmup+cosine LR, EMA weights."""
import copy
import math
import random

import numpy as np
import torch
import torch.nn.functional as F
from torchvision import datasets, models, transforms as T


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301


def mix_batch(x, y, num_classes, alpha=0.2, cutmix_p=0.5):
    lam, perm = float(np.random.beta(alpha, alpha)), torch.randperm(x.size(0), device=x.device)
    onehot = F.one_hot(y, num_classes).float()
    if random.random() < cutmix_p:
        h, w = x.shape[2:]
        rh, rw = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
        cy, cx = random.randrange(h), random.randrange(w)
        top, bottom = max(cy - rh // 2, 0), min(cy + rh // 2, h)
        left, right = max(cx - rw // 2, 0), min(cx + rw // 2, w)
        x[:, :, top:bottom, left:right] = x[perm, :, top:bottom, left:right]  # ok: MLS309
        lam = 1 - (bottom - top) * (right - left) / (h * w)
    else:
        x = lam * x + (1 - lam) * x[perm]  # ok: MLS309
    return x, lam * onehot + (1 - lam) * onehot[perm]  # ok: MLS309


def main(epochs=200, base_lr=0.1, seed=0, accum=1):
    set_seed(seed)
    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor()])
    loader = torch.utils.data.DataLoader(datasets.CIFAR100("data", train=True, download=True, transform=tf),
                                         batch_size=128, shuffle=True, num_workers=4, drop_last=True)
    model = models.resnet18(num_classes=100).cuda()
    ema = copy.deepcopy(model).eval()
    opt = torch.optim.SGD(model.parameters(), lr=base_lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    scaler = torch.cuda.amp.GradScaler()
    total, warmup, step = epochs * len(loader) // accum, 5 * len(loader) // accum, 0
    for epoch in range(epochs):
        for i, (x, y) in enumerate(loader):
            x, soft = mix_batch(x.cuda(non_blocking=True), y.cuda(non_blocking=True), 100)
            with torch.autocast("cuda", dtype=torch.float16):
                loss = F.cross_entropy(model(x), soft, label_smoothing=0.1) / accum  # ok: MLS306
            scaler.scale(loss).backward()
            if (i + 1) % accum:
                continue
            cosine = 0.5 * (1 + math.cos(math.pi * max(0, step - warmup) / max(1, total - warmup)))
            for g in opt.param_groups:
                g["lr"] = base_lr * min((step + 1) / warmup, cosine)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            with torch.no_grad():
                for e, p in zip(ema.parameters(), model.parameters()):
                    e.mul_(0.9995).add_(p.detach(), alpha=0.0005)  # ok: MLS302, MLS303, MLS304, MLS305
            step += 1
        torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "epoch": epoch}, "cifar100_r18.pt")


if __name__ == "__main__":
    main()
