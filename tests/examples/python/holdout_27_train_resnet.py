# ruff: noqa
# Hold-out batch 27 (benchmark format: short files, one case each; by a helper that never saw mlscan's code). Measured once after round 10: 12/17 (71%) at medium+.
"""Plain PyTorch ResNet-50 training loop with AMP and cosine schedule."""
import argparse

import torch
import torch.nn as nn
import torchvision


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=90)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--accum", type=int, default=2)
    p.add_argument("--clip", type=float, default=5.0)
    return p.parse_args()


def train(loader, args, device="cuda"):
    model = torchvision.models.resnet50(num_classes=1000).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs * len(loader))
    scaler = torch.cuda.amp.GradScaler()
    crit = nn.CrossEntropyLoss(label_smoothing=0.1)  # ok: MLS309
    step = 0
    for epoch in range(args.epochs):
        model.train()
        for i, (x, y) in enumerate(loader):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast("cuda", dtype=torch.float16):
                loss = crit(model(x), y) / args.accum  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.scale(loss).backward()
            if (i + 1) % args.accum:
                continue
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            sched.step()
            step += 1
            if step % 500 == 0:
                # periodic renorm keeps BN-free heads numerically stable under fp16
                with torch.no_grad():
                    for name, p in model.named_parameters():
                        if p.ndim > 1:
                            p.mul_(0.97)  # ruleid: MLS302
        print(f"epoch {epoch} loss {loss.item() * args.accum:.4f}")
    return model


if __name__ == "__main__":
    from data import imagenet_loader

    a = parse_args()
    train(imagenet_loader(), a)
