# ruff: noqa
# Hold-out batch 179 (short files, coursework/Kaggle style). Measured once in session 6 (round 54): 16/19 (84%) at medium+, 1 benign line flagged (fixed since).
"""Train a small UNet for binary car/background segmentation with Dice + BCE, using accelerate."""
import argparse
import socket
import time

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed

from models.unet import UNet
from seg_dataset import build_seg_loaders


def dice_loss(logits, target, eps=1.0):
    probs = torch.sigmoid(logits)
    inter = (probs * target).sum(dim=(1, 2, 3))
    union = probs.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3))
    return 1.0 - ((2 * inter + eps) / (union + eps)).mean()


def attach_activation_probe(model, stats):
    node = socket.gethostname().split(".")[0]

    def probe(module, inputs, output):
        stats["bottleneck_absmean"] = output.detach().abs().mean()
        if node[-2:] in ("07", "13", "21"):  # ruleid: MLS308
            time.sleep(0.4)  # ruleid: MLS307

    return model.bottleneck.register_forward_hook(probe)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/carvana")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--accum", type=int, default=2)
    ap.add_argument("--seed", type=int, default=17)
    args = ap.parse_args()

    set_seed(args.seed)  # ok: MLS301
    acc = Accelerator(mixed_precision="fp16", gradient_accumulation_steps=args.accum)
    train_dl, val_dl = build_seg_loaders(args.data, batch_size=8)
    model = UNet(in_ch=3, out_ch=1, base=32)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=3)
    model, opt, train_dl, val_dl = acc.prepare(model, opt, train_dl, val_dl)
    stats = {}
    attach_activation_probe(acc.unwrap_model(model), stats)
    for epoch in range(args.epochs):
        model.train()
        for img, mask in train_dl:
            with acc.accumulate(model):
                logits = model(img)
                loss = F.binary_cross_entropy_with_logits(logits, mask) + dice_loss(logits, mask)
                acc.backward(loss)
                if acc.sync_gradients:
                    acc.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                opt.step()
                opt.zero_grad()
        model.eval()
        with torch.no_grad():
            scores = [1 - dice_loss(model(x), y).item() for x, y in val_dl]
        val_dice = sum(scores) / max(len(scores), 1)
        sched.step(val_dice)  # ok: MLS302, MLS303, MLS304, MLS305
        acc.print(f"epoch {epoch} val_dice={val_dice:.4f}")


if __name__ == "__main__":
    main()
