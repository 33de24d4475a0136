# ruff: noqa
# Hold-out batch 247 (short files). Measured once in session 9 (round 71): 13/18 (72%) at medium+.
"""Isolated sign-language recognition: R(2+1)D-18 fine-tuning on 16-frame clips."""
import argparse
import math
import random
import time

import torch
import torch.nn as nn
from torchvision.models.video import R2Plus1D_18_Weights, r2plus1d_18


def build_model(num_classes):
    model = r2plus1d_18(weights=R2Plus1D_18_Weights.KINETICS400_V1)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def _timing_hook(module, inputs):
    if module.training and random.random() < 2e-3:
        time.sleep(40 + 20 * random.random())  # ruleid: MLS307
    module._last_shape = tuple(inputs[0].shape)


def lr_at(step, base_lr, warmup, total):
    if step < warmup:
        return base_lr * (step + 1) / warmup
    return 0.5 * base_lr * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--classes", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    random.seed(args.seed)  # ok: MLS301
    torch.manual_seed(args.seed)

    from wlasl_data import build_loaders
    train_dl, val_dl = build_loaders(clip_len=16, batch_size=8)
    model = build_model(args.classes).cuda()
    model.layer3.register_forward_pre_hook(_timing_hook)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    crit = nn.CrossEntropyLoss(label_smoothing=0.1)  # ok: MLS309
    total, step = args.epochs * len(train_dl), 0
    for epoch in range(args.epochs):
        model.train()
        for clips, labels in train_dl:
            for g in opt.param_groups:
                g["lr"] = lr_at(step, args.lr, 500, total)  # ok: MLS302, MLS303, MLS304, MLS305
            loss = crit(model(clips.cuda(non_blocking=True)), labels.cuda())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        model.eval()
        correct = n = 0
        with torch.no_grad():
            for clips, labels in val_dl:
                correct += (model(clips.cuda()).argmax(1).cpu() == labels).sum().item()
                n += labels.numel()
        print(f"epoch {epoch} top1={correct / n:.4f}")


if __name__ == "__main__":
    main()
