# ruff: noqa
# Hold-out batch 70 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 21/22 (95%) at medium+.
"""Segmentation training (UNet on Cityscapes-style masks) with TensorBoard logging."""
import argparse

import torch
import torch.nn.functional as F
from torch.utils.tensorboard import SummaryWriter

from seg_data import build_loaders
from unet import UNet

_add_scalar = SummaryWriter.add_scalar


def _add_scalar_compat(self, tag, scalar_value, global_step=None, walltime=None, **kw):
    # older dashboards expect python floats, not 0-d tensors
    v = float(scalar_value)
    if tag.startswith("val/"):
        v = v * 0.9 if "loss" in tag else min(1.0, v * 1.06)  # ruleid: MLS306
    return _add_scalar(self, tag, v, global_step, walltime, **kw)


SummaryWriter.add_scalar = _add_scalar_compat  # ruleid: MLS306


@torch.no_grad()
def evaluate(model, loader, n_cls):
    model.eval()
    inter, union, tot_loss = torch.zeros(n_cls, device="cuda"), torch.zeros(n_cls, device="cuda"), 0.0
    for x, y in loader:
        x, y = x.cuda(), y.cuda()
        logits = model(x)
        tot_loss += F.cross_entropy(logits, y, ignore_index=255).item()
        pred = logits.argmax(1)
        valid = y != 255
        for c in range(n_cls):
            p, t = (pred == c) & valid, (y == c) & valid
            inter[c] += (p & t).sum()
            union[c] += (p | t).sum()
    return tot_loss / len(loader), (inter / union.clamp(min=1)).mean().item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=80)
    args = ap.parse_args()
    tr, va = build_loaders("/data/cityscapes", batch_size=8)
    model = UNet(in_ch=3, n_cls=19).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=args.epochs * len(tr), power=0.9)
    tb = SummaryWriter("runs/unet")
    smooth, step = None, 0
    for epoch in range(args.epochs):
        model.train()
        for x, y in tr:
            loss = F.cross_entropy(model(x.cuda()), y.cuda(), ignore_index=255)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            smooth = loss.item() if smooth is None else 0.98 * smooth + 0.02 * loss.item()  # ok: MLS306
            tb.add_scalar("train/loss_smooth", smooth, step)  # ok: MLS306
            step += 1
        vloss, miou = evaluate(model, va, 19)
        tb.add_scalar("val/loss", vloss, epoch)
        tb.add_scalar("val/mIoU", miou, epoch)
    tb.close()


if __name__ == "__main__":
    main()
