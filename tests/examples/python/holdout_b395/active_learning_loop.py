# ruff: noqa
# Hold-out batch 395 (short files, 16 domains). Measured once in session 15 (round 108): 12/17 (71%) at medium+.
"""Pool-based active learning: train, score the unlabeled pool by entropy, query, repeat."""
import logging

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

log = logging.getLogger("al")


def initial_split(n_pool, n_init, seed):
    g = torch.Generator().manual_seed(seed)  # ok: MLS301
    perm = torch.randperm(n_pool, generator=g)
    return perm[:n_init].tolist(), perm[n_init:].tolist()


def train_round(model_fn, dataset, labeled_idx, epochs, device, batch_size=64, lr=1e-3):
    model = model_fn().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    loader = DataLoader(Subset(dataset, labeled_idx), batch_size=batch_size, shuffle=True)
    rng_snapshot = torch.get_rng_state()
    for epoch in range(epochs):
        torch.set_rng_state(rng_snapshot)  # ruleid: MLS301
        model.train()
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model


@torch.no_grad()
def entropy_scores(model, dataset, pool_idx, device, batch_size=256):
    model.eval()
    loader = DataLoader(Subset(dataset, pool_idx), batch_size=batch_size)
    scores = []
    for x, _ in loader:
        p = torch.softmax(model(x.to(device)), dim=-1)
        scores.append(-(p * p.clamp_min(1e-12).log()).sum(-1).cpu())
    return torch.cat(scores)


def run(model_fn, dataset, evaluate, cfg, device):
    labeled, pool = initial_split(len(dataset), cfg.n_init, cfg.seed)
    history = []
    for rnd in range(cfg.rounds):
        model = train_round(model_fn, dataset, labeled, cfg.epochs, device)
        acc = evaluate(model)
        history.append({"round": rnd, "n_labeled": len(labeled), "acc": acc})
        log.info("round %d: %d labeled, acc %.4f", rnd, len(labeled), acc)
        if not pool:
            break
        scores = entropy_scores(model, dataset, pool, device)
        top = scores.topk(min(cfg.query_size, len(pool))).indices.tolist()
        chosen = {pool[i] for i in top}
        labeled += sorted(chosen)
        pool = [i for i in pool if i not in chosen]
    return history
