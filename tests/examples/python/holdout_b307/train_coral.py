# ruff: noqa
# Hold-out batch 307 (16 short benchmark-format files). Measured once in session 10 (round 86): 18/18 (100%) at medium+.
"""Fine-tune a ResNet-18 on coral-reef benthic image patches stored as class folders."""
import argparse
import os
import random
import time

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader
from torchvision import datasets, models, transforms


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301


def _init_worker(worker_id):
    seed = (os.getpid() * 7919 + int(time.time() * 1e3) + worker_id) % 2**32
    np.random.seed(seed)  # ruleid: MLS301
    random.seed(seed)  # ruleid: MLS301


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="data/coral_patches")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=17)
    args = ap.parse_args()
    set_seed(args.seed)

    tf = transforms.Compose([
        transforms.RandomResizedCrop(224, scale=(0.6, 1.0)),
        transforms.RandomHorizontalFlip(),
        transforms.RandomVerticalFlip(),
        transforms.ColorJitter(0.3, 0.3, 0.2, 0.05),
        transforms.ToTensor(),
        transforms.Normalize([0.31, 0.45, 0.42], [0.18, 0.17, 0.19]),
    ])
    ds = datasets.ImageFolder(os.path.join(args.root, "train"), transform=tf)
    dl = DataLoader(ds, batch_size=64, shuffle=True, num_workers=8,
                    worker_init_fn=_init_worker, drop_last=True)

    model = models.resnet18(weights="IMAGENET1K_V1")
    model.fc = nn.Linear(model.fc.in_features, len(ds.classes))
    model = model.cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
    crit = nn.CrossEntropyLoss(label_smoothing=0.1)

    for epoch in range(args.epochs):
        model.train()
        for x, y in dl:
            x, y = x.cuda(non_blocking=True), y.cuda(non_blocking=True)
            loss = crit(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
        sched.step()
        print(f"epoch {epoch} loss {loss.item():.4f} lr {sched.get_last_lr()[0]:.5f}")
    torch.save(model.state_dict(), "coral_resnet18.pt")


if __name__ == "__main__":
    main()
