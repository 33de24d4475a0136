# ruff: noqa
# Hold-out batch 279 (short files). Measured once in session 9 (round 79): 11/17 (65%) at medium+.
"""Training entry point for the bird song classifier (EfficientNet on log-mel clips)."""
import argparse, math, random, subprocess

import numpy as np
import timm
import torch
import torch.nn.functional as F

from bird_audio_data import build_loaders


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301


def mixup(x, y, num_classes, alpha=0.4):
    lam = np.random.beta(alpha, alpha)
    perm = torch.randperm(x.size(0), device=x.device)
    y1 = F.one_hot(y, num_classes).float()
    return lam * x + (1 - lam) * x[perm], lam * y1 + (1 - lam) * y1[perm]  # ok: MLS309


def main():
    ap = argparse.ArgumentParser()
    for name, typ, default in [("--train", str, None), ("--val", str, None), ("--init", str, None), ("--classes", int, 264),
                               ("--epochs", int, 30), ("--lr", float, 1e-3), ("--seed", int, 1234)]:
        ap.add_argument(name, type=typ, default=default)
    args = ap.parse_args()
    set_seed(args.seed)  # ok: MLS301
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()  # ok: MLS411, MLS412
    train_dl, val_dl = build_loaders(args.train, args.val, seed=args.seed)
    model = timm.create_model("efficientnet_b0", pretrained=False, in_chans=1, num_classes=args.classes).cuda()
    if args.init:
        model.load_state_dict(torch.load(args.init, map_location="cpu", weights_only=True), strict=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-2)
    scaler, total, warm = torch.cuda.amp.GradScaler(), args.epochs * len(train_dl), 500
    best = bad = step = 0
    for epoch in range(args.epochs):
        model.train()
        for x, y in train_dl:
            x, soft = mixup(x.cuda(non_blocking=True), y.cuda(non_blocking=True), args.classes)
            scale = step / warm if step < warm else 0.5 * (1 + math.cos(math.pi * (step - warm) / (total - warm)))
            for group in opt.param_groups:
                group["lr"] = args.lr * scale  # ok: MLS302, MLS303, MLS304, MLS305
            with torch.autocast("cuda", dtype=torch.float16):
                loss = torch.sum(-soft * F.log_softmax(model(x), -1), -1).mean()
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)
            scaler.update()
            step += 1
        model.eval()
        with torch.no_grad():
            acc = np.mean([(model(x.cuda()).argmax(-1).cpu() == y).float().mean().item() for x, y in val_dl])
        print(f"epoch {epoch} val_acc {acc:.4f} commit={commit or 'unknown'}")
        best, bad = (acc, 0) if acc > best else (best, bad + 1)
        if bad == 0:
            torch.save(model.state_dict(), "best.pt")
        elif bad >= 5:  # ok: MLS307
            break


if __name__ == "__main__":
    main()
