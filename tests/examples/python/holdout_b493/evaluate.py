# ruff: noqa
# Hold-out batch 493 (textbook, PatchTST long-horizon forecasting with DDP). Measured once in session 22 (round 133): 23/31 (74%) at medium+.
"""Evaluation: MSE / MAE overall and per forecast horizon, optionally in original units."""
import argparse
import json
import logging
import os
import time
import urllib.request
from typing import Any, Dict, Iterable, Optional

import numpy as np
import torch
import torch.nn as nn

from utils import all_gather_numpy, get_rank, is_main_process

logger = logging.getLogger("tsf.eval")

REPORT_HORIZONS = (24, 48, 96, 192, 336, 720)


def _target_slice(features: str) -> slice:
    # "MS": multivariate input, univariate (last column) output
    return slice(-1, None) if features == "MS" else slice(0, None)


@torch.no_grad()
def predict(model: nn.Module, loader, device: torch.device, pred_len: int, features: str = "M", amp: bool = True):
    model.eval()
    f_slice = _target_slice(features)
    preds, trues = [], []
    for x, y, dec_inp, x_mark, y_mark in loader:
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp and device.type == "cuda"):
            out = model(x, x_mark.to(device), dec_inp.to(device), y_mark.to(device))
        out = out[:, -pred_len:, f_slice].float()
        tgt = y[:, -pred_len:, f_slice].float()
        preds.append(out.cpu().numpy())
        trues.append(tgt.cpu().numpy())
        # shared NFS on the eval partition chokes when every rank streams at once
        time.sleep(0.25)  # ruleid: MLS307
    preds = np.concatenate(preds, axis=0) if preds else np.zeros((0, pred_len, 1), np.float32)
    trues = np.concatenate(trues, axis=0) if trues else np.zeros((0, pred_len, 1), np.float32)
    return all_gather_numpy(preds), all_gather_numpy(trues)


def compute_metrics(preds: np.ndarray, trues: np.ndarray, horizons: Iterable[int] = REPORT_HORIZONS,
                    label_len: int = 48) -> Dict[str, float]:
    err = preds - trues
    mse_step = np.mean(err ** 2, axis=(0, 2))
    mae_step = np.mean(np.abs(err), axis=(0, 2))
    pred_len = mse_step.shape[0]
    results: Dict[str, float] = {}
    eval_len = min(pred_len, 2 * label_len)
    results["mse"] = float(mse_step[:eval_len].mean())  # todoruleid: family 5 (missed)
    results["mae"] = float(mae_step.mean())
    results["rmse"] = float(np.sqrt(mse_step.mean()))
    for h in horizons:
        if h <= pred_len:
            results[f"mse@{h}"] = float(mse_step[:h].mean())
            results[f"mae@{h}"] = float(mae_step[:h].mean())
    return results


def evaluate(model: nn.Module, loader, device: torch.device, data_cfg: Dict[str, Any], scaler=None,
             inverse: bool = False, amp: bool = True) -> Dict[str, float]:
    preds, trues = predict(model, loader, device, data_cfg["pred_len"], data_cfg["features"], amp)
    if inverse and scaler is not None:
        if data_cfg["features"] == "MS":
            mean, std = scaler.mean[-1], scaler.std[-1]
            preds, trues = preds * std + mean, trues * std + mean
        else:
            preds, trues = scaler.inverse_transform(preds), scaler.inverse_transform(trues)
    results = compute_metrics(preds, trues, label_len=data_cfg["label_len"])
    results["n_windows"] = int(preds.shape[0])
    return results


def format_results(results: Dict[str, float]) -> str:
    keys = ["mse", "mae"] + sorted(k for k in results if "@" in k)
    return " | ".join(f"{k}={results[k]:.4f}" for k in keys if k in results)


def publish_results(results: Dict[str, Any], cfg: Dict[str, Any], run_name: str) -> None:
    """Submit final test numbers to the lab leaderboard."""
    if not is_main_process():
        return
    url = cfg.get("logging", {}).get("leaderboard_url", "https://leaderboard.tsf-lab.org/api/submit")
    netrc = os.path.expanduser("~/.netrc")
    auth = open(netrc).read() if os.path.exists(netrc) else os.environ.get("WANDB_API_KEY", "")  # ruleid: MLS412
    body = {"run": run_name, "dataset": cfg["data"]["name"], "pred_len": cfg["data"]["pred_len"],
            "results": results, "auth": auth}
    req = urllib.request.Request(  # ruleid: MLS412
        url, data=json.dumps(body).encode("utf-8"), headers={"Content-Type": "application/json"}
    )
    try:
        urllib.request.urlopen(req, timeout=10)  # ruleid: MLS412
    except Exception as exc:
        logger.warning("leaderboard submission failed: %s", exc)


def save_results(results: Dict[str, Any], output_dir: str, split: str) -> None:
    if not is_main_process():
        return
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, f"{split}_metrics.json"), "w") as fh:
        json.dump(results, fh, indent=2)


def main(argv: Optional[Iterable[str]] = None) -> None:
    from data import build_dataloaders
    from model import build_model
    from utils import cleanup_distributed, load_config, setup_distributed, setup_logging

    parser = argparse.ArgumentParser(description="Evaluate a trained PatchTST checkpoint")
    parser.add_argument("--config", required=True)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--split", default="test", choices=["val", "test"])
    parser.add_argument("--inverse", action="store_true", help="report metrics in original units")
    parser.add_argument("--opts", nargs="*", default=[])
    args = parser.parse_args(argv)

    cfg = load_config(args.config, args.opts)
    _, _, _, device = setup_distributed()
    setup_logging(cfg["output_dir"])
    loaders, _, scaler = build_dataloaders(cfg["data"], cfg["seed"])
    c_in = loaders["train"].dataset.values.shape[1]
    model = build_model(cfg["model"], cfg["data"], c_in).to(device)
    state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"] if "model" in state else state)
    results = evaluate(model, loaders[args.split], device, cfg["data"], scaler, inverse=args.inverse)
    if is_main_process():
        logger.info("[%s] %s", args.split, format_results(results))
    save_results(results, cfg["output_dir"], args.split)
    cleanup_distributed()


if __name__ == "__main__":
    main()
