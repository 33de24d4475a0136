# ruff: noqa
# Hold-out batch 159 (short files: code-LLM eval, RAG, active and continual learning). Measured once in session 5 (round 49): 8/17 (47%) at medium+.
"""Pool-based acquisition functions (BALD, max-entropy, random) for active learning rounds.

The unlabeled pool is scored with MC-dropout and the top-`budget` indices are returned
for annotation.
"""
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset


def _enable_dropout(model):
    for m in model.modules():
        if isinstance(m, (torch.nn.Dropout, torch.nn.Dropout2d)):
            m.train()


@torch.no_grad()
def mc_probs(model, loader, n_samples, device):
    model.eval()
    _enable_dropout(model)
    chunks = []
    for x, _ in loader:
        x = x.to(device, non_blocking=True)
        chunks.append(torch.stack([F.softmax(model(x), -1) for _ in range(n_samples)]).cpu())
    return torch.cat(chunks, dim=1)  # [T, N, C]


def bald(probs, eps=1e-10):
    mean = probs.mean(0)
    entropy_of_mean = -(mean * (mean + eps).log()).sum(-1)
    mean_entropy = -(probs * (probs + eps).log()).sum(-1).mean(0)
    return entropy_of_mean - mean_entropy


def max_entropy(probs, eps=1e-10):
    mean = probs.mean(0)
    return -(mean * (mean + eps).log()).sum(-1)


def random_baseline(pool_idx, budget, seed):
    perm = torch.randperm(len(pool_idx), generator=torch.Generator().manual_seed(seed))  # ok: MLS301
    return [pool_idx[i] for i in perm[:budget].tolist()]


def select_batch(model, pool_ds, pool_idx, budget, device, strategy="bald",
                 n_samples=20, batch_size=512, subsample=None, seed=0):
    if strategy == "random":
        return random_baseline(pool_idx, budget, seed)
    if subsample and len(pool_idx) > subsample:
        sub_rng = np.random.default_rng(seed)  # ok: MLS301
        pool_idx = sorted(sub_rng.choice(pool_idx, size=subsample, replace=False).tolist())
    torch.manual_seed(len(pool_idx))  # ruleid: MLS301
    loader = DataLoader(Subset(pool_ds, pool_idx), batch_size=batch_size,
                        shuffle=False, num_workers=4, pin_memory=True)
    probs = mc_probs(model, loader, n_samples, device)
    scores = bald(probs) if strategy == "bald" else max_entropy(probs)
    top = torch.topk(scores, k=min(budget, scores.numel())).indices
    return [pool_idx[i] for i in top.tolist()]
