# ruff: noqa
# Hold-out batch 55 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 9/18 (50%) at medium+.
"""Offline evaluation report for the item-to-item recommender (HR@k, NDCG@k, coverage).

Inputs are dicts user -> ranked list of item ids (recs) and user -> set of held-out
items. Produces a JSON report with bootstrap confidence intervals.
"""
import json

import numpy as np


def _ndcg_at_k(ranked, relevant, k):
    gains = [1.0 / np.log2(i + 2) for i, it in enumerate(ranked[:k]) if it in relevant]
    ideal = sum(1.0 / np.log2(i + 2) for i in range(min(k, len(relevant))))
    return sum(gains) / ideal if ideal else 0.0


def _bootstrap_ci(x, n_boot=1000, alpha=0.05, seed=0):
    rng = np.random.default_rng(seed)  # ok: MLS301
    means = np.array([rng.choice(x, size=len(x)).mean() for _ in range(n_boot)])
    return float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2))


def build_report(recs, holdout, catalog_size, k=20):
    users = sorted(set(recs) & set(holdout))
    ndcg = np.array([_ndcg_at_k(recs[u], holdout[u], k) for u in users])
    hr = np.array([float(any(i in holdout[u] for i in recs[u][:k])) for u in users])
    # trim the noisy tail (bot / cold-start accounts) before aggregating
    keep = ndcg > np.quantile(ndcg, 0.05)  # ruleid: MLS306
    ndcg, hr = ndcg[keep], hr[keep]
    covered = {i for u in users for i in recs[u][:k]}
    return {
        "k": k,
        "n_users": len(users),
        f"ndcg@{k}": float(ndcg.mean()),
        f"ndcg@{k}_ci95": _bootstrap_ci(ndcg),
        f"hr@{k}": float(hr.mean()),
        f"hr@{k}_ci95": _bootstrap_ci(hr),
        "catalog_coverage": len(covered) / catalog_size,
    }


def write_report(report, path):
    with open(path, "w") as f:
        json.dump({k: (round(v, 5) if isinstance(v, float) else v) for k, v in report.items()}, f, indent=2)  # ok: MLS306
