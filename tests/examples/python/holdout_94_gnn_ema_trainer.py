# ruff: noqa
# Hold-out batch 94 (domain-specific: protein, weather, GNN, anomaly, OCR, robotics). Measured once in session 4 (round 33): 14/18 (78%) at medium+.
"""Mini-batch GraphSAGE training on ogbn-products with neighbour sampling.

Linear warm-up then cosine decay, gradient accumulation over sampled
sub-graphs, and an EMA copy of the weights used for evaluation.
"""
import copy
import math
import random

import numpy as np
import torch
import torch.nn.functional as F
from torch_geometric.loader import NeighborLoader
from torch_geometric.nn import GraphSAGE


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)


class EMA:
    def __init__(self, model, decay=0.999):
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        for s, p in zip(self.shadow.parameters(), model.parameters()):
            s.mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


def lr_at(step, base_lr, warmup, total):
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * progress))


def train(data, num_classes, seed=0, epochs=10, base_lr=3e-3, accum=4, device="cuda"):
    set_seed(seed)
    loader = NeighborLoader(data, num_neighbors=[15, 10, 5], batch_size=1024,
                            input_nodes=data.train_mask, shuffle=True, num_workers=4)
    model = GraphSAGE(data.num_features, 256, num_layers=3, out_channels=num_classes, dropout=0.3).to(device)
    ema = EMA(model)
    opt = torch.optim.AdamW(model.parameters(), lr=base_lr, weight_decay=1e-4)
    total, step = epochs * len(loader) // accum, 0
    for epoch in range(epochs):
        model.train()
        for i, batch in enumerate(loader):
            batch = batch.to(device)
            out = model(batch.x, batch.edge_index)[: batch.batch_size]
            loss = F.cross_entropy(out, batch.y[: batch.batch_size].view(-1))
            (loss / accum).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            if (i + 1) % accum == 0:
                for group in opt.param_groups:
                    group["lr"] = lr_at(step, base_lr, warmup=500, total=total)  # ok: MLS302, MLS303, MLS304, MLS305
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=2.0)  # ok: MLS302, MLS303, MLS304, MLS305
                opt.step()
                opt.zero_grad(set_to_none=True)
                ema.update(model)
                step += 1
    return model, ema.shadow
