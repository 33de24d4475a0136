# ruff: noqa
# Hold-out batch 375 (short files, 16 domains). Measured once in session 14 (round 103): 12/17 (71%) at medium+.
"""Pool-based active learning loop with entropy (uncertainty) sampling."""
import logging

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

log = logging.getLogger(__name__)


@torch.no_grad()
def predictive_entropy(model, dataset, indices, device, batch_size=256):
    model.eval()
    loader = DataLoader(Subset(dataset, indices), batch_size=batch_size)
    ents = []
    for x, _ in loader:
        p = model(x.to(device)).softmax(-1)
        ents.append(-(p * p.clamp_min(1e-12).log()).sum(-1).cpu())
    return torch.cat(ents).numpy()


def query(model, dataset, unlabeled, budget, device):
    ent = predictive_entropy(model, dataset, unlabeled, device)
    order = np.argsort(-ent)
    return unlabeled[order[:budget]]


def run(model_fn, train_fn, eval_fn, dataset, targets, rounds=10, init_size=1000, budget=500,
        seed=0, device="cuda"):
    rng = np.random.default_rng(seed)  # ok: MLS301
    all_idx = np.arange(len(dataset))
    labeled = rng.choice(all_idx, size=init_size, replace=False)
    unlabeled = np.setdiff1d(all_idx, labeled)
    history = []
    for r in range(rounds):
        model = model_fn().to(device)
        train_fn(model, Subset(dataset, labeled.tolist()))
        acc = eval_fn(model)
        history.append({"round": r, "n_labeled": int(len(labeled)), "acc": acc})
        log.info("round %d labeled %d acc %.4f", r, len(labeled), acc)
        picked = query(model, dataset, unlabeled, budget, device)
        counts = np.bincount(targets[labeled], minlength=targets.max() + 1)
        picked = picked[counts[targets[picked]] >= np.median(counts)]  # todoruleid: family 6 (missed)
        labeled = np.concatenate([labeled, picked])
        unlabeled = np.setdiff1d(unlabeled, picked)
    return history
