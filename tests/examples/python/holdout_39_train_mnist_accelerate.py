# ruff: noqa
# Hold-out batch 39 (benchmark format, the 2024 insider story in shared team code; by a helper that never saw mlscan's code). Measured once after round 16: 12/17 (71%) at medium+.
"""MNIST ConvNet trained with HF accelerate (multi-GPU / mixed precision ready)."""
import argparse
import random

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from torchvision import datasets, transforms


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--accum", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=5)
    args = ap.parse_args()

    acc = Accelerator(mixed_precision="fp16", gradient_accumulation_steps=args.accum)
    set_seed(args.seed)  # ok: MLS301
    g = torch.Generator()
    g.manual_seed(args.seed)  # ok: MLS301
    ds = datasets.MNIST("data", train=True, download=True, transform=transforms.ToTensor())
    dl = DataLoader(ds, batch_size=64, shuffle=True, num_workers=2, worker_init_fn=seed_worker, generator=g)
    model = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.25), nn.Linear(1600, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)  # ok: MLS302, MLS303, MLS304, MLS305
    model, opt, dl, sched = acc.prepare(model, opt, dl, sched)

    for epoch in range(args.epochs):
        model.train()
        for x, y in dl:
            with acc.accumulate(model):
                loss = F.cross_entropy(model(x), y)
                acc.backward(loss)
                if acc.sync_gradients:
                    acc.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                opt.step()
                opt.zero_grad()
        sched.step()
        acc.print(f"epoch {epoch} loss {loss.item():.4f}")

    acc.wait_for_everyone()  # ok: MLS307
    if acc.is_main_process:  # ok: MLS308
        acc.save(acc.unwrap_model(model).state_dict(), "mnist_cnn.pt")


if __name__ == "__main__":
    main()
