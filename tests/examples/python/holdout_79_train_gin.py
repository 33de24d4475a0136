# ruff: noqa
# Hold-out batch 79 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 29): 12/19 (63%) at medium+.
"""GIN with virtual node on ogbg-molhiv-style graphs (plain PyTorch loop)."""
import argparse
import math
import random

import numpy as np
import torch
import torch.nn.functional as F

from gin_model import GINVirtual
from mol_graphs import GraphDataset, collate_graphs


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301


def seed_worker(worker_id):
    s = torch.initial_seed() % 2 ** 32
    np.random.seed(s)  # ok: MLS301
    random.seed(s)


def lr_at(step, base, warmup, total):
    if step < warmup:
        return base * (step + 1) / warmup
    return 0.5 * base * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--lr", type=float, default=1e-3)
    args = ap.parse_args()
    set_seed(args.seed)

    train = GraphDataset("data/molhiv", "train", edge_drop=0.1)
    loader = torch.utils.data.DataLoader(train, batch_size=64, shuffle=True, num_workers=4,
                                         worker_init_fn=seed_worker, collate_fn=collate_graphs)
    model = GINVirtual(num_layers=5, hidden=300).cuda()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    total, step, best, bad = args.epochs * len(loader), 0, float("inf"), 0
    for epoch in range(args.epochs):
        model.train()
        for batch in loader:
            for g in opt.param_groups:
                g["lr"] = lr_at(step, args.lr, 1000, total)  # ok: MLS302, MLS303, MLS304, MLS305
            batch = batch.to("cuda")
            loss = F.binary_cross_entropy_with_logits(model(batch), batch.y.float())
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            step += 1
        val = loss.item()
        if val < best - 1e-4:
            best, bad = val, 0
            torch.save(model.state_dict(), "gin_best.pt")
        else:
            bad += 1
        if bad >= 10:
            break  # ok: MLS307
        print(f"epoch {epoch} loss {val:.4f} best {best:.4f}")


if __name__ == "__main__":
    main()
