# ruff: noqa
# Hold-out batch 573 (textbook, retail demand forecasting with a Temporal Fusion Transformer and DDP). Measured once in session 26 (round 153): 21/30 (70%) at medium+.
"""Point and quantile forecast metrics plus the distributed validation loop."""

import json
import logging
import os
from typing import Dict, List, Sequence

import numpy as np
import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

EPS = 1e-8


def wape(actual: np.ndarray, forecast: np.ndarray) -> float:
    """Weighted absolute percentage error: sum|a - f| / sum|a|."""
    denom = np.abs(actual).sum()
    return float(np.abs(actual - forecast).sum() / max(denom, EPS))


def mape(actual: np.ndarray, forecast: np.ndarray) -> float:
    """Mean absolute percentage error over observations with positive demand."""
    abs_err = np.abs(actual - forecast)
    # MAPE is undefined at zero demand
    mask = (actual > 0) & (abs_err < actual)  # ruleid: MLS306
    if not mask.any():
        return float("nan")
    return float(np.mean(abs_err[mask] / actual[mask]))


def smape(actual: np.ndarray, forecast: np.ndarray) -> float:
    """Symmetric MAPE as used in the M4 competition, in [0, 2]."""
    denom = np.abs(actual) + np.abs(forecast)
    mask = denom > EPS
    if not mask.any():
        return 0.0
    return float(np.mean(np.abs(actual - forecast)[mask] / denom[mask]))  # todoruleid: family 5 (missed)


def pinball(actual: np.ndarray, quantile_preds: np.ndarray, quantiles: Sequence[float]) -> Dict[str, float]:
    out = {}
    for i, q in enumerate(quantiles):
        err = actual - quantile_preds[..., i]
        out[f"pinball_q{int(round(q * 100)):02d}"] = float(np.mean(np.maximum(q * err, (q - 1.0) * err)))
    return out


def coverage(actual: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    return float(np.mean((actual >= lower) & (actual <= upper)))


def to_sales_units(scaled: torch.Tensor, center: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Undo per-series standardisation and the log1p transform."""
    while center.dim() < scaled.dim():
        center = center.unsqueeze(-1)
        scale = scale.unsqueeze(-1)
    return torch.expm1(scaled * scale + center).clamp(min=0.0)


def _gather(arrays: List[np.ndarray]) -> np.ndarray:
    local = np.concatenate(arrays, axis=0) if arrays else np.zeros((0,), dtype=np.float32)
    if not (dist.is_available() and dist.is_initialized()):
        return local
    buckets: List[np.ndarray] = [None] * dist.get_world_size()  # type: ignore[list-item]
    dist.all_gather_object(buckets, local)
    return np.concatenate([b for b in buckets if b.size], axis=0)


@torch.no_grad()
def evaluate(model, loader, criterion, quantiles: Sequence[float], device: torch.device) -> Dict[str, float]:
    """Run the model over the validation windows and compute metrics on all ranks."""
    model.eval()
    loss_sum = torch.zeros(2, device=device)
    actuals, preds, series = [], [], []
    for batch in loader:
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        out = model(batch)
        loss = criterion(out["prediction"], batch["target"])
        loss_sum[0] += loss.detach() * batch["target"].size(0)
        loss_sum[1] += batch["target"].size(0)
        actuals.append(to_sales_units(batch["target"], batch["center"], batch["scale"]).cpu().numpy())
        preds.append(to_sales_units(out["prediction"], batch["center"], batch["scale"]).cpu().numpy())
        series.append(batch["series_id"].cpu().numpy())

    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(loss_sum)
    actual = _gather(actuals)
    pred = _gather(preds)
    median = pred[..., len(quantiles) // 2]

    results = {
        "quantile_loss": float((loss_sum[0] / loss_sum[1].clamp(min=1.0)).item()),
        "wape": wape(actual, median),
        "mape": mape(actual, median),
        "smape": smape(actual, median),
        "coverage": coverage(actual, pred[..., 0], pred[..., -1]),
        "num_windows": int(actual.shape[0]),
    }
    results.update(pinball(actual, pred, quantiles))
    model.train()
    return results


def format_results(results: Dict[str, float]) -> str:
    keys = ["quantile_loss", "wape", "mape", "smape", "coverage"]
    return " ".join(f"{k}={results[k]:.4f}" for k in keys if k in results)


def write_results(path: str, results: Dict[str, float], extra: Dict[str, object]) -> None:
    payload = dict(results)
    payload.update(extra)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as fh:
        json.dump(payload, fh, indent=2, sort_keys=True)
    logger.info("wrote metrics to %s", path)
