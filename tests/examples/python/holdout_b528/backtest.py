# ruff: noqa
# Hold-out batch 528 (family-focused 1/6, time-series forecasting). Measured once in session 23 (round 141): 9/30 (30%) at medium+.
"""Rolling-origin backtest of a trained ensemble over several forecast cut-off dates.

For every cut-off the panel is re-scaled with information available at that date, each ensemble
member produces quantile forecasts, the quantiles are averaged across members and scored.

Example:
    python backtest.py --run_dir runs/m5_gru --data_dir /data/m5 \
        --cutoffs 2016-02-28 2016-03-27 2016-04-24
"""
import argparse
import glob
import json
import logging
import os
from typing import Dict, List

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from data import (DataConfig, MeanAbsScaler, SeriesIndexer, WindowDataset, build_panel, collate_windows,
                  make_splits, select_series, subset_panel, PAST_FEATURES, KNOWN_FEATURES,
                  CALENDAR_FEATURES)
from model import GlobalQuantileForecaster, weighted_quantile_loss
from utils import load_checkpoint, setup_logging

logger = logging.getLogger("forecast.backtest")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run_dir", required=True)
    p.add_argument("--data_dir", required=True)
    p.add_argument("--cutoffs", nargs="+", required=True)
    p.add_argument("--checkpoint", default="best.pt")
    p.add_argument("--batch_size", type=int, default=1024)
    p.add_argument("--num_workers", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default=None)
    return p.parse_args()


def eval_worker_init(worker_id: int) -> None:
    np.random.seed(torch.initial_seed() % 2 ** 32)  # ok: MLS301


def load_members(run_dir: str, checkpoint: str, device: torch.device):
    members = []
    for member_dir in sorted(glob.glob(os.path.join(run_dir, "member_*"))):
        ckpt_path = os.path.join(member_dir, checkpoint)
        if not os.path.exists(ckpt_path):
            logger.warning("missing %s, skipping member", ckpt_path)
            continue
        with open(os.path.join(member_dir, "config.json")) as f:
            cfg = json.load(f)
        members.append((cfg, load_checkpoint(ckpt_path, map_location="cpu")))
    if not members:
        raise FileNotFoundError(f"no ensemble members found under {run_dir}")
    return members


def instantiate(cfg: Dict, state: Dict, num_stores: int, device: torch.device) -> GlobalQuantileForecaster:
    model = GlobalQuantileForecaster(
        num_series_buckets=cfg["series_buckets"], num_stores=num_stores,
        past_dim=len(PAST_FEATURES) + len(KNOWN_FEATURES) + len(CALENDAR_FEATURES),
        future_dim=len(KNOWN_FEATURES) + len(CALENDAR_FEATURES),
        context_length=cfg["context_length"], horizon=cfg["horizon"], quantiles=cfg["quantiles"],
        hidden=cfg["hidden"], num_layers=cfg["num_layers"], dropout=cfg["dropout"], cov_dropout=0.0)
    model.load_state_dict(state["model"])
    return model.to(device).eval()


def mase_denominator(target: np.ndarray, observed: np.ndarray, end: int, season: int = 7) -> np.ndarray:
    y = target[:, :end]
    m = observed[:, :end]
    diff = np.abs(y[:, season:] - y[:, :-season]) * m[:, season:] * m[:, :-season]
    cnt = (m[:, season:] * m[:, :-season]).sum(axis=1)
    return np.maximum(diff.sum(axis=1) / np.maximum(cnt, 1.0), 1e-3)


@torch.no_grad()
def forecast_cutoff(models, ds: WindowDataset, args, device) -> Dict[str, np.ndarray]:
    loader = DataLoader(ds, batch_size=args.batch_size, shuffle=False, num_workers=args.num_workers,
                        collate_fn=collate_windows, worker_init_fn=eval_worker_init)
    preds, targets, masks, rows = [], [], [], []
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        q = torch.stack([m.predict(batch) for m in models]).mean(0)
        scale = batch["log_scale"].exp().unsqueeze(-1)
        preds.append(q.cpu())
        targets.append((torch.expm1(batch["future_target"]) * scale).cpu())
        masks.append(batch["future_observed"].cpu())
        rows.append(batch["series_idx"].cpu())
    return {
        "pred": torch.cat(preds).numpy(),
        "target": torch.cat(targets).numpy(),
        "mask": torch.cat(masks).numpy(),
        "series_idx": torch.cat(rows).numpy(),
    }


def score(out: Dict[str, np.ndarray], quantiles: List[float], mase_den: np.ndarray) -> Dict[str, float]:
    pred = torch.from_numpy(out["pred"])
    target = torch.from_numpy(out["target"])
    mask = torch.from_numpy(out["mask"])
    wql = weighted_quantile_loss(pred, target, mask, quantiles).item()
    median = out["pred"][..., quantiles.index(0.5)] if 0.5 in quantiles else out["pred"].mean(-1)
    abs_err = np.abs(median - out["target"]) * out["mask"]
    mase = float(np.mean(abs_err.sum(1) / np.maximum(out["mask"].sum(1), 1.0) / mase_den))
    lo, hi = out["pred"][..., 0], out["pred"][..., -1]
    inside = ((out["target"] >= lo) & (out["target"] <= hi)) * out["mask"]
    coverage = float(inside.sum() / max(out["mask"].sum(), 1.0))
    return {"wql": wql, "mase": mase, "coverage": coverage,
            "nominal_coverage": float(quantiles[-1] - quantiles[0])}


def main() -> None:
    args = parse_args()
    setup_logging(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    members = load_members(args.run_dir, args.checkpoint, device)
    cfg0 = members[0][0]
    data_cfg = DataConfig(data_dir=args.data_dir, context_length=cfg0["context_length"],
                          horizon=cfg0["horizon"], series_buckets=cfg0["series_buckets"],
                          num_workers=args.num_workers, batch_size=args.batch_size)
    panel = build_panel(data_cfg)
    quantiles = cfg0["quantiles"]
    horizon = cfg0["horizon"]

    results = []
    for i, cutoff in enumerate(args.cutoffs):
        torch.manual_seed(args.seed + i)  # ok: MLS301
        origin = panel.dates.get_loc(pd.Timestamp(cutoff))
        if origin + horizon > len(panel.dates):
            logger.warning("cutoff %s leaves fewer than %d days, skipping", cutoff, horizon)
            continue
        splits = make_splits(panel.dates[: origin + horizon], horizon, test_cutoff=cutoff)
        sub = subset_panel(panel, select_series(panel, splits.train_end, data_cfg.min_nonzero))
        scaler = MeanAbsScaler().fit(sub.target, sub.observed, end=origin + horizon)  # todoruleid: family 6 (missed)
        codes = SeriesIndexer(data_cfg.series_buckets).encode(sub.series_ids)
        ds = WindowDataset(sub, scaler, codes, data_cfg.context_length, horizon, mode="eval", origin=origin)
        num_stores = int(panel.store_codes.max()) + 1
        models = [instantiate(cfg, state, num_stores, device) for cfg, state in members]
        out = forecast_cutoff(models, ds, args, device)
        metrics = score(out, quantiles, mase_denominator(sub.target, sub.observed, origin))
        metrics.update({"cutoff": cutoff, "num_series": sub.num_series, "members": len(models)})
        logger.info("cutoff %s  wQL %.4f  MASE %.3f  coverage %.3f", cutoff, metrics["wql"],
                    metrics["mase"], metrics["coverage"])
        results.append(metrics)

    if results:
        summary = {k: float(np.mean([r[k] for r in results])) for k in ("wql", "mase", "coverage")}
        logger.info("mean over %d cutoffs: %s", len(results), json.dumps(summary))
    else:
        summary = {}
    output = args.output or os.path.join(args.run_dir, "backtest.json")
    with open(output, "w") as f:
        json.dump({"cutoffs": results, "summary": summary}, f, indent=2)


if __name__ == "__main__":
    main()
