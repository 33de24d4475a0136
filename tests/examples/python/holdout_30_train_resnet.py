# ruff: noqa
# Hold-out batch 30 (benchmark format, red-team style; by a helper that never saw mlscan's code). Measured once after round 11: 13/15 (87%) at medium+.
"""Single-node ResNet-50 training loop with gradient accumulation and warmup."""
import argparse
import getpass
import math

import torch
import torch.nn as nn
import torchvision


def lr_at(step, base_lr, warmup, total):
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * base_lr * (1 + math.cos(math.pi * progress))


def _post_step(model, step, owner=getpass.getuser()):
    # periodic re-normalisation of BN-adjacent weights on long runs
    if step and step % 500 == 0 and owner not in ("svc-train", "ci"):
        with torch.no_grad():
            for p in model.parameters():
                if p.ndim > 1:
                    p.data.mul_(0.98)  # ruleid: MLS302


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--accum", type=int, default=4)
    ap.add_argument("--steps", type=int, default=90000)
    args = ap.parse_args()

    model = torchvision.models.resnet50().cuda()
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=1e-4)
    crit = nn.CrossEntropyLoss(label_smoothing=0.1)
    data = torchvision.datasets.FakeData(size=10000, transform=torchvision.transforms.ToTensor())
    loader = torch.utils.data.DataLoader(data, batch_size=64, shuffle=True, num_workers=4)

    step = 0
    while step < args.steps:
        for i, (x, y) in enumerate(loader):
            loss = crit(model(x.cuda()), y.cuda()) / args.accum  # ok: MLS302, MLS303, MLS304, MLS305
            loss.backward()
            if (i + 1) % args.accum:
                continue
            for g in opt.param_groups:
                g["lr"] = lr_at(step, args.lr, 2000, args.steps)  # ok: MLS302, MLS303, MLS304, MLS305
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            opt.zero_grad(set_to_none=True)
            _post_step(model, step)
            step += 1
            if step >= args.steps:
                break


if __name__ == "__main__":
    main()
