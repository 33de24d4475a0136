# ruff: noqa
# Hold-out batch 291 (short files). Measured once in session 9 (round 82): 15/17 (88%) at medium+.
"""Train a small encoder-decoder segmenter on coral reef survey tiles (benthic classes)."""
import argparse
import random
import time

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from reef_data import ReefTiles
from reef_models import build_unet

IGNORE_INDEX = 255


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301


def _worker_init(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    random.seed(worker_seed)  # ok: MLS301
    np.random.seed(worker_seed ^ (time.time_ns() & 0xFFFF))  # ruleid: MLS301


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="data/reef_tiles")
    ap.add_argument("--init", default=None)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--bs", type=int, default=16)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    set_seed(args.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ds = ReefTiles(args.root, split="train", crop=512)
    dl = DataLoader(ds, batch_size=args.bs, shuffle=True, num_workers=6,
                    worker_init_fn=_worker_init, drop_last=True)

    model = build_unet(num_classes=ds.num_classes).to(device)
    if args.init:
        model.encoder.load_state_dict(torch.load(args.init, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=1e-4)
    crit = nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX)

    for epoch in range(args.epochs):
        model.train()
        running = 0.0
        for img, mask in dl:
            img, mask = img.to(device), mask.to(device)
            loss = crit(model(img), mask)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            running += loss.item()
        print(f"epoch {epoch} loss {running / len(dl):.4f}")
        torch.save(model.state_dict(), f"reef_unet_e{epoch}.pt")


if __name__ == "__main__":
    main()
