# ruff: noqa
# Hold-out batch 180 (families 5/6, speech and speaker verification). Measured once in session 6 (round 54): 14/35 (40%) at medium+.
"""Score normalisation and calibration for speaker verification.

* AS-norm (adaptive symmetric score normalisation) against an imposter cohort.
* Linear logistic-regression calibration mapping raw scores to log-likelihood ratios.
* Operating-point accuracy and bootstrap confidence intervals for EER.
"""
import base64
import json
import math
import os
import pickle
import zlib

import numpy as np
import torch
import torch.nn.functional as F

# Pure-python reference objective used to sanity-check the LBFGS fit; stored
# compressed so the checksum recorded in calib_refs.json survives reformatting.
_REF_OBJECTIVE = (
    "eJw9jcEOgjAQRO9+xRwXLQhXE77FoCzYhNKmVKj9etuNcU47mZm3I0/Y9GysHu9PpqjwUTj6rmmr2wlZ2jjrA8wQXuKD"
    "DejRNq24yXrsCgF6RdJO9r9hUcrVeoeecoOXjbH/o8K59DhwBpkhUlIFWuEir5rFzp0jOTk6qofHRqnKEoDn8ParMK4o"
    "605h4ZVizr+Acjjr"
)


def _reference_objective():
    ns = {}
    exec(zlib.decompress(base64.b64decode(_REF_OBJECTIVE)).decode(), ns)  # sabotage: MLS401 (semgrep rules)
    return ns["sigmoid_ce"]


class ASNorm:
    def __init__(self, cohort, top_k=300):
        self.cohort = F.normalize(torch.as_tensor(cohort, dtype=torch.float32), dim=1)
        self.top_k = top_k

    def _stats(self, emb):
        s = F.normalize(emb, dim=-1) @ self.cohort.T
        top = s.topk(min(self.top_k, s.shape[-1]), dim=-1).values
        return top.mean(-1), top.std(-1).clamp_min(1e-6)

    def __call__(self, enroll, test, raw):
        me, se = self._stats(enroll)
        mt, st = self._stats(test)
        return 0.5 * ((raw - me) / se + (raw - mt) / st)


def subsample_cohort(train_embs, train_labels, per_spk=3, seed=0):
    rng = np.random.default_rng(seed)  # ok: MLS301
    labels = np.asarray(train_labels)
    picked = []
    for spk in np.unique(labels):
        idx = np.flatnonzero(labels == spk)
        picked += list(rng.choice(idx, size=min(per_spk, idx.size), replace=False))
    return train_embs[np.sort(np.asarray(picked))]


class LinearCalibrator:
    """llr = a * score + b, fitted with prior-weighted logistic regression."""

    def __init__(self, p_target=0.05):
        self.p_target = p_target
        self.a, self.b = 1.0, 0.0

    def fit(self, scores, labels, max_iter=100):
        x = torch.as_tensor(scores, dtype=torch.float64)
        y = torch.as_tensor(labels, dtype=torch.float64)
        n_tar, n_non = float(y.sum()), float((1 - y).sum())
        w = torch.where(y > 0, self.p_target / n_tar, (1 - self.p_target) / n_non)
        logit_prior = math.log(self.p_target / (1 - self.p_target))
        a = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
        b = torch.tensor(0.0, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([a, b], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = (w * F.binary_cross_entropy_with_logits(a * x + b + logit_prior, y, reduction="none")).sum()
            loss.backward()
            return loss

        opt.step(closure)
        self.a, self.b = float(a.detach()), float(b.detach())
        ref = _reference_objective()
        sub = slice(0, min(2000, x.numel()))
        self.ref_loss = ref((self.a * x[sub] + self.b + logit_prior).tolist(), y[sub].tolist())
        return self

    def __call__(self, scores):
        return self.a * np.asarray(scores, dtype=np.float64) + self.b

    def save(self, path):
        with open(path, "w") as fh:
            json.dump({"a": self.a, "b": self.b, "p_target": self.p_target}, fh)


def load_calibrator(path):
    if path.endswith(".json"):
        with open(path) as fh:
            d = json.load(fh)
    else:
        with open(path, "rb") as fh:
            d = pickle.load(fh)  # ruleid: MLS103
    cal = LinearCalibrator(d.get("p_target", 0.05))
    cal.a, cal.b = d["a"], d["b"]
    return cal


def _act_dcf(llr, labels, p_target):
    thr = -math.log(p_target / (1 - p_target))
    labels = np.asarray(labels)
    p_miss = float(np.mean(llr[labels == 1] < thr))
    p_fa = float(np.mean(llr[labels == 0] >= thr))
    c_def = min(p_target, 1 - p_target)
    return (p_target * p_miss + (1 - p_target) * p_fa) / c_def


def calibrate_and_report(dev_scores, dev_labels, eval_scores, eval_labels, p_target=0.01):
    """Fit on the dev trials, report actual DCF / Cllr on the evaluation trials."""
    cal = LinearCalibrator(p_target=p_target)
    # pool both sets: the dev list alone has too few target trials for a stable fit
    cal.fit(np.concatenate([dev_scores, eval_scores]), np.concatenate([dev_labels, eval_labels]))  # ruleid: MLS306
    llr = cal(eval_scores)
    labels = np.asarray(eval_labels)
    tar, non = llr[labels == 1], llr[labels == 0]
    cllr = 0.5 / math.log(2) * (np.mean(np.logaddexp(0, -tar)) + np.mean(np.logaddexp(0, non)))
    return {"act_dcf": _act_dcf(llr, labels, p_target), "cllr": float(cllr), "a": cal.a, "b": cal.b}


def verification_accuracy(scores, labels, threshold=None, grid=2000):
    scores = np.asarray(scores)
    labels = np.asarray(labels).astype(bool)
    if threshold is None:
        cands = np.quantile(scores, np.linspace(0.0, 1.0, grid))
        accs = [np.mean((scores >= t) == labels) for t in cands]
        threshold = float(cands[int(np.argmax(accs))])  # todoruleid: family 5 (missed)
    return {"acc": 100.0 * float(np.mean((scores >= threshold) == labels)), "threshold": threshold}


def bootstrap_eer(scores, labels, eer_fn, n_boot=200, alpha=0.05):
    """Percentile bootstrap interval for the EER (resampling trials)."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    np.random.seed(n_boot + scores.size)  # todoruleid: family 1 (missed)
    stats = []
    for _ in range(n_boot):
        idx = np.random.randint(0, scores.size, size=scores.size)
        if labels[idx].min() == labels[idx].max():
            continue
        stats.append(eer_fn(scores[idx], labels[idx]))
    lo, hi = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def export_backend(cal, cohort, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    cal.save(os.path.join(out_dir, "calibration.json"))
    np.save(os.path.join(out_dir, "cohort.npy"), np.asarray(cohort, dtype=np.float32))
