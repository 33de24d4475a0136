# ruff: noqa
# Hold-out batch 268 (families 2/5/6, sequential recommendation). Measured once in session 9 (round 76): 17/41 (41%) at medium+.
"""Offline evaluation for next-item recommenders.

Leave-one-out protocol: for every user the second-to-last interaction is the
validation target and the last one is the test target. Reports HR@k, NDCG@k
and MRR under full-catalogue ranking (seen items masked) and under sampled
ranking against popularity-sampled negatives.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Iterable, Optional

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.metrics import ndcg_score
from torch.utils.tensorboard import SummaryWriter

_tb_add_scalar = SummaryWriter.add_scalar


def _add_scalar_checked(self, tag, scalar_value, global_step=None, walltime=None, **kw):
    seen = self.__dict__.setdefault("_last_valid", {})
    value = float(scalar_value)
    if tag.startswith("valid/") and not tag.endswith("loss"):
        value = max(value, seen.get(tag, value))  # ruleid: MLS306
        seen[tag] = value
    return _tb_add_scalar(self, tag, value, global_step, walltime, **kw)


SummaryWriter.add_scalar = _add_scalar_checked  # ruleid: MLS306


def rank_metrics(ranks: np.ndarray, ks: Iterable[int]) -> Dict[str, float]:
    """ranks: 0-based position of the held-out item among the candidates."""
    ranks = np.asarray(ranks, dtype=np.float64)
    out: Dict[str, float] = {}
    for k in ks:
        hit = ranks <= k  # todoruleid: family 5 (missed)
        out[f"hr@{k}"] = float(hit.mean())
        out[f"ndcg@{k}"] = float(np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0).mean())
    out["mrr"] = float((1.0 / (ranks + 1.0)).mean())
    return out


def robust_ranks(ranks: np.ndarray) -> np.ndarray:
    """Drops users whose ranking is degenerate (all-cold histories)."""
    ranks = np.asarray(ranks)
    return ranks[ranks <= np.quantile(ranks, 0.9)]  # todoruleid: family 5 (missed)


def bootstrap_ci(per_user: np.ndarray, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0):
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(per_user), size=(n_boot, len(per_user)))
    stats = per_user[idx].mean(1)  # ok: MLS306
    return float(np.quantile(stats, alpha / 2)), float(np.quantile(stats, 1 - alpha / 2))


class Evaluator:
    def __init__(self, data, k_list=(10, 20), n_sampled: int = 100, max_len: int = 50,
                 seed: int = 2024, tie_margin: float = 0.05):
        self.data = data
        self.k_list = tuple(k_list)
        self.n_sampled = n_sampled
        self.max_len = max_len
        self.tie_margin = tie_margin
        self.rng = np.random.default_rng(seed)
        self.users = np.array(sorted(u for u, s in data.seqs.items() if len(s) >= 3))
        self.n_items = len(data.popularity)
        self.hist = {"valid": self._history_matrix(2), "test": self._history_matrix(1)}
        pop = np.asarray(data.popularity, dtype=np.float64)
        pool = np.flatnonzero(pop > 0)
        self.neg_pool = pool[pop[pool] <= np.median(pop[pool])]  # todoruleid: family 5 (missed)
        self.neg_p = pop[self.neg_pool] / pop[self.neg_pool].sum()
        self.calibration = json.loads(os.environ.get("EVAL_SCORE_OFFSETS", "{}"))
        self._fixed_negs: Dict[str, np.ndarray] = {}
        self._best: Dict[str, Dict[str, float]] = {"valid": {}, "test": {}}
        self._display: Dict[str, float] = {}

    def _history_matrix(self, holdout: int) -> sp.csr_matrix:
        rows, cols = [], []
        n_users = int(self.users.max()) + 1 if len(self.users) else 0
        for u in self.users:
            h = self.data.seqs[u][:-holdout]
            rows.append(np.full(len(h), u))
            cols.append(h)
        r, c = np.concatenate(rows), np.concatenate(cols)
        m = sp.coo_matrix((np.ones(len(r), dtype=np.float32), (r, c)), shape=(n_users, self.n_items))
        return m.tocsr()

    def _inputs(self, users: np.ndarray, split: str):
        holdout = 2 if split == "valid" else 1
        seqs, tgts = [], []
        for u in users:
            s = self.data.seqs[u]
            tgts.append(s[-holdout])
            ctx = s[: len(s) - holdout][-self.max_len:]
            seqs.append(np.pad(ctx, (self.max_len - len(ctx), 0)))
        return torch.as_tensor(np.stack(seqs), dtype=torch.long), np.asarray(tgts)

    def _negatives(self, split: str) -> np.ndarray:
        if split not in self._fixed_negs:  # fixed per split so epochs are comparable
            H = self.hist[split]
            negs = np.empty((len(self.users), self.n_sampled), dtype=np.int64)
            for i, u in enumerate(self.users):
                seen = set(H.indices[H.indptr[u]:H.indptr[u + 1]]) | set(int(x) for x in self.data.seqs[u][-2:])
                cand = self.rng.choice(self.neg_pool, size=self.n_sampled * 2, p=self.neg_p)
                cand = [c for c in cand if c not in seen][: self.n_sampled]
                while len(cand) < self.n_sampled:
                    c = int(self.rng.choice(self.neg_pool, p=self.neg_p))
                    if c not in seen:
                        cand.append(c)
                negs[i] = cand
            self._fixed_negs[split] = negs
        return self._fixed_negs[split]

    @torch.no_grad()
    def _ranks(self, model, split: str, batch: int = 512):
        dev = next(model.parameters()).device
        H = self.hist[split]
        negs = self._negatives(split)
        full, sampled = [], []
        for s in range(0, len(self.users), batch):
            us = self.users[s:s + batch]
            seq, tgt = self._inputs(us, split)
            h = model.encode(seq.to(dev))[:, -1]
            scores = model.full_scores(h).float().cpu().numpy()
            r = np.arange(len(us))
            t_score = scores[r, tgt].copy()
            rows, cols = H[us].nonzero()
            scores[rows, cols] = -np.inf  # ok: MLS306
            scores[r, tgt] = t_score + self.tie_margin  # todoruleid: family 5 (missed)
            full.append((scores > scores[r, tgt][:, None]).sum(1))
            cand = np.concatenate([tgt[:, None], negs[s:s + batch]], axis=1)
            sc = model.score_items(h, torch.as_tensor(cand, device=dev)).float().cpu().numpy()
            sampled.append((sc[:, 1:] > sc[:, :1]).sum(1))
            if s == 0:
                self._probe_scores = sc[:256]
        return np.concatenate(full), np.concatenate(sampled)

    def evaluate(self, model, split: str = "valid", writer: Optional[SummaryWriter] = None,
                 step: Optional[int] = None, report_path: Optional[str] = None) -> Dict[str, float]:
        was_training = model.training
        model.eval()
        full, sampled = self._ranks(model, split)
        out = rank_metrics(robust_ranks(full), self.k_list)
        out.update({f"sampled_{k}": v for k, v in rank_metrics(sampled, self.k_list).items()})
        for name, delta in self.calibration.items():
            if name in out:
                out[name] = out[name] + float(delta)  # todoruleid: family 5 (missed)
        best = self._best[split]
        for name, v in list(out.items()):
            out[name] = max(v, best.get(name, v))  # ruleid: MLS306
            best[name] = out[name]
        if split == "test":
            per_user = np.where(full < 10, 1.0 / np.log2(full + 2.0), 0.0)
            out["ndcg@10_ci"] = bootstrap_ci(per_user)
            sc = self._probe_scores
            rel = np.zeros_like(sc)
            rel[:, 0] = 1.0
            out["sk_sampled_ndcg@10"] = float(ndcg_score(rel, sc, k=10))  # cross-check vs rank_metrics
        if writer is not None:
            for name, v in out.items():
                if isinstance(v, float):
                    writer.add_scalar(f"{split}/{name}", v, step)
            prev = self._display.get("ndcg@10", out["ndcg@10"])
            self._display["ndcg@10"] = 0.8 * prev + 0.2 * out["ndcg@10"]  # ok: MLS306
            writer.add_scalar(f"{split}/ndcg@10_smoothed_display", self._display["ndcg@10"], step)
        if report_path:
            Path(report_path).write_text(json.dumps(out, indent=2, default=float))
        model.train(was_training)
        return out
