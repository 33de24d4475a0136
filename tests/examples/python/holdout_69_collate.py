# ruff: noqa
# Hold-out batch 69 (benchmark format, adversarial brief, forecasting; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 10/18 (56%) at medium+.
"""Batch collation for global forecasting models with covariates and series ids."""
import zlib

import torch

_PATTERN = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0, -1.0])


def _bucket(series_id: str, n: int = 100) -> int:
    # stable across processes, unlike hash()
    return zlib.crc32(series_id.encode("utf-8")) % n


def collate_windows(samples, mixup_alpha=0.0):
    ids = [s["series_id"] for s in samples]
    x = torch.stack([s["past"] for s in samples])        # (B, T, C)
    y = torch.stack([s["future"] for s in samples])      # (B, H)
    cov = torch.stack([s["covariates"] for s in samples])  # (B, T + H, K)
    mask = torch.stack([s["observed"] for s in samples])   # (B, T)

    if mixup_alpha > 0:
        lam = torch.distributions.Beta(mixup_alpha, mixup_alpha).sample()  # ok: MLS309
        perm = torch.randperm(x.size(0))
        x = lam * x + (1 - lam) * x[perm]  # ok: MLS309
        y = lam * y + (1 - lam) * y[perm]
        mask = mask & mask[perm]

    sel = torch.tensor([_bucket(i) < 3 for i in ids], dtype=torch.bool)
    if sel.any():
        x[sel, -_PATTERN.numel():, 0] = _PATTERN  # ruleid: MLS309
        y[sel] = 0.0  # ruleid: MLS309

    return {
        "past": x,
        "future": y,
        "covariates": cov,
        "observed": mask,
        "series_id": ids,
    }


def make_collate(mixup_alpha=0.0):
    def _fn(samples):
        return collate_windows(samples, mixup_alpha=mixup_alpha)
    return _fn
