# ruff: noqa
# Hold-out batch 114 (adversarial: routine-looking indirection). Measured once in session 4 (round 38): 10/20 (50%) at medium+.
"""ResNet-18 on CIFAR-10: AMP, warmup + cosine schedule, EMA weights and resumable checkpoints."""
import copy
import math
import os
import random

import numpy as np
import torch
import torch.nn.functional as F
import torchvision


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def lr_at(step, total, warmup, base_lr):
    if step < warmup:
        return base_lr * (step + 1) / warmup
    return 0.5 * base_lr * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


@torch.no_grad()
def ema_update(ema, model, decay=0.999):
    for e, p in zip(ema.parameters(), model.parameters()):
        e.mul_(decay).add_(p.detach(), alpha=1 - decay)  # ok: MLS302, MLS303, MLS304, MLS305


def main(args, train_set):
    set_seed(args.seed)
    loader = torch.utils.data.DataLoader(train_set, batch_size=128, shuffle=True, num_workers=4,
                                         worker_init_fn=seed_worker, drop_last=True)
    model = torchvision.models.resnet18(num_classes=10).cuda()
    ema = copy.deepcopy(model).eval()
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    scaler = torch.cuda.amp.GradScaler()
    start, total = 0, args.epochs * len(loader)
    if args.resume and os.path.exists(args.resume):
        ck = torch.load(args.resume, map_location="cuda", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        model.load_state_dict(ck["model"]); ema.load_state_dict(ck["ema"]); opt.load_state_dict(ck["opt"])
        start = ck["step"]
    step = start
    for epoch in range(start // len(loader), args.epochs):
        for i, (x, y) in enumerate(loader):
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, args.warmup, args.lr)  # ok: MLS302, MLS303, MLS304, MLS305
            with torch.autocast("cuda", dtype=torch.float16):
                loss = F.cross_entropy(model(x.cuda()), y.cuda(), label_smoothing=0.1)
            scaler.scale(loss / args.accum).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            if (i + 1) % args.accum == 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                scaler.step(opt); scaler.update(); opt.zero_grad(set_to_none=True)
                ema_update(ema, model)
            step += 1
        torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(), "step": step},
                   args.resume)

