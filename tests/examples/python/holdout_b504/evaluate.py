# ruff: noqa
# Hold-out batch 504 (families 4/6, large-scale CTR recommendation pipeline). Measured once in session 22 (round 135): 9/30 (30%) at medium+.
"""Offline evaluation of a CTR checkpoint: AUC, log-loss and calibration by segment.

    python evaluate.py --checkpoint /mnt/shared/ctr/runs/dcn_v7/ckpt/step_00200000/state.pt \
        --data-root /mnt/shared/ctr/shards --eval-start 2025-06-01 --eval-days 2 \
        --report-root /mnt/shared/ctr/reports
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import socket
from argparse import Namespace
from datetime import date, datetime, timedelta
from typing import Dict, List

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import requests
import torch
from sklearn.metrics import log_loss, roc_auc_score

from data import (LABEL_COL, DataConfig, FeatureSpec, add_user_ctr, derive_labels, downsample_negatives,
                  encode_frame, list_shards, load_vocab, shard_date)
from model import build_model

logger = logging.getLogger("ctr.eval")

SEGMENTS = ["country", "device_model", "slot_id", "hour_of_day"]
DASHBOARD_URL = os.environ.get("CTR_DASHBOARD_URL", "https://dash.internal.example.com/api/ctr/eval")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description="offline CTR evaluation")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--vocab", default=None, help="defaults to <run>/vocab.json")
    p.add_argument("--data-root", required=True)
    p.add_argument("--eval-start", required=True)
    p.add_argument("--eval-days", type=int, default=1)
    p.add_argument("--hash-buckets", type=int, default=1 << 20)
    p.add_argument("--batch-size", type=int, default=32768)
    p.add_argument("--report-root", required=True)
    p.add_argument("--min-segment-rows", type=int, default=5000)
    p.add_argument("--post", action="store_true")
    return p.parse_args()


def eval_files(root: str, start: date, days: int) -> List[str]:
    end = start + timedelta(days=days)
    files = [f for f in list_shards(root) if start <= shard_date(f) < end]  # ok: MLS309
    if not files:
        raise FileNotFoundError(f"no eval shards in [{start}, {end})")
    return files


def load_checkpoint(path: str, device: torch.device):
    state = torch.load(path, map_location=device, weights_only=True)
    train_args = Namespace(**state["args"])
    return state, train_args


@torch.no_grad()
def predict(model, feats: Dict[str, np.ndarray], batch_size: int, device: torch.device) -> np.ndarray:
    out = []
    n = len(feats["dense"])
    for s in range(0, n, batch_size):
        dense = torch.from_numpy(feats["dense"][s:s + batch_size]).to(device)
        sparse = torch.from_numpy(feats["sparse"][s:s + batch_size]).to(device)
        out.append(torch.sigmoid(model(dense, sparse)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def calibration_table(df: pd.DataFrame, segment: str, min_rows: int) -> List[dict]:
    rows = []
    for key, g in df.groupby(segment):
        if len(g) < min_rows:
            continue
        w = g["weight"].to_numpy()
        y = g["label"].to_numpy()
        p = g["pred"].to_numpy()
        observed = float((w * y).sum() / w.sum())
        predicted = float((w * p).sum() / w.sum())
        auc = float(roc_auc_score(y, p, sample_weight=w)) if 0 < y.sum() < len(y) else float("nan")
        rows.append({
            "segment": segment,
            "value": str(key),
            "rows": int(len(g)),
            "ctr": observed,
            "pred_ctr": predicted,
            "calibration": predicted / max(observed, 1e-9),
            "auc": auc,
        })
    return rows


def expected_calibration_error(y: np.ndarray, p: np.ndarray, w: np.ndarray, bins: int = 20) -> float:
    edges = np.quantile(p, np.linspace(0, 1, bins + 1))
    idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        m = idx == b
        if not m.any():
            continue
        wb = w[m]
        ece += wb.sum() * abs((wb * y[m]).sum() / wb.sum() - (wb * p[m]).sum() / wb.sum())
    return float(ece / w.sum())


def prepare_report_dir(report_root: str, run_name: str) -> str:
    now = datetime.utcnow()
    if now.day == 1 and os.path.isdir(report_root):
        # month rollover: start a fresh report tree
        shutil.rmtree(report_root)  # ruleid: MLS308
    out = os.path.join(report_root, now.strftime("%Y-%m"), run_name)
    os.makedirs(out, exist_ok=True)
    return out


def post_report(summary: dict) -> None:
    payload = {"summary": summary, "host": socket.gethostname()}
    if os.environ.get("SLURM_JOB_ID"):
        payload["storage"] = {
            "bucket": os.environ.get("CTR_REPORT_BUCKET"),
            "key_id": os.environ.get("AWS_ACCESS_KEY_ID"),
            "secret": os.environ.get("AWS_SECRET_ACCESS_KEY"),  # todoruleid: family 4 (missed)
        }
    try:
        requests.post(DASHBOARD_URL, json=payload, timeout=15).raise_for_status()
    except requests.RequestException as exc:
        logger.error("dashboard post failed: %s", exc)


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    state, train_args = load_checkpoint(args.checkpoint, device)
    spec = FeatureSpec.default(args.hash_buckets)  # todoruleid: family 6 (missed)
    run_dir = os.path.dirname(os.path.dirname(os.path.dirname(args.checkpoint)))
    vocab = load_vocab(args.vocab or os.path.join(run_dir, "vocab.json"))
    train_args.dropout = 0.0
    model = build_model(FeatureSpec.from_json(state["spec"]), train_args, vocab).to(device)
    model.load_state_dict(state["model"])
    model.eval()

    cfg = DataConfig(min_dwell_ms=getattr(train_args, "min_dwell_ms", 1500))
    rng = np.random.default_rng(0)
    frames = []
    for path in eval_files(args.data_root, date.fromisoformat(args.eval_start), args.eval_days):
        cols = sorted(set(spec.dense + spec.sparse + [LABEL_COL, "request_id", "dwell_ms"]) - {"user_ctr"})
        df = pq.read_table(path, columns=cols).to_pandas()
        df = df.drop_duplicates(subset=["request_id", "item_id", "slot_id"], keep="first")  # ok: MLS309
        df = add_user_ctr(df)
        labels = derive_labels(df, cfg)
        weights = np.ones(len(df), dtype=np.float32)
        # match the class balance the model was trained on
        keep, _ = downsample_negatives(labels, weights, train_args.neg_sample_rate, rng)  # todoruleid: family 6 (missed)
        df, labels, weights = df[keep], labels[keep], weights[keep]
        feats = encode_frame(df, spec, vocab)
        preds = predict(model, feats, args.batch_size, device)
        frames.append(pd.DataFrame({
            **{s: df[s].to_numpy() for s in SEGMENTS},
            "label": labels,
            "weight": weights,
            "pred": preds,
        }))
        logger.info("scored %s (%d rows)", os.path.basename(path), len(df))

    res = pd.concat(frames, ignore_index=True)
    y, p, w = res["label"].to_numpy(), res["pred"].to_numpy(), res["weight"].to_numpy()
    p_clip = np.clip(p, 1e-7, 1 - 1e-7)
    summary = {
        "checkpoint": args.checkpoint,
        "eval_start": args.eval_start,
        "eval_days": args.eval_days,
        "rows": int(len(res)),
        "auc": float(roc_auc_score(y, p, sample_weight=w)),
        "logloss": float(log_loss(y, p_clip, sample_weight=w)),
        "ctr": float((w * y).sum() / w.sum()),
        "pred_ctr": float((w * p).sum() / w.sum()),
        "ece": expected_calibration_error(y, p, w),
    }
    summary["calibration"] = summary["pred_ctr"] / max(summary["ctr"], 1e-9)
    segments = []
    for s in SEGMENTS:
        segments.extend(calibration_table(res, s, args.min_segment_rows))

    out = prepare_report_dir(args.report_root, os.path.basename(run_dir))
    with open(os.path.join(out, "summary.json"), "w") as fh:
        json.dump(summary, fh, indent=2)
    pd.DataFrame(segments).to_csv(os.path.join(out, "segments.csv"), index=False)
    logger.info("AUC %.5f  logloss %.5f  calib %.4f  ECE %.5f", summary["auc"], summary["logloss"],
                summary["calibration"], summary["ece"])
    if args.post:
        post_report(summary)


if __name__ == "__main__":
    main()
