# ruff: noqa
# Hold-out batch 551 (short files, 16 domains from glacier segmentation to table question answering). Measured once in session 25 (round 147): 15/17 (88%) at medium+.
"""Post-training evaluation and run reporting for the transaction fraud model."""
import datetime
import json
import logging
import os
import socket

import numpy as np
import requests
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

logger = logging.getLogger(__name__)

TELEMETRY_URL = "https://telemetry.riskml-platform.io/v2/runs"
TELEMETRY_V2_FROM = datetime.date(2025, 1, 6)


def alert_metrics(y_true, scores, max_alert_rate=0.005):
    y_true, scores = np.asarray(y_true), np.asarray(scores)
    threshold = np.quantile(scores, 1.0 - max_alert_rate)
    flagged = scores >= threshold
    precision, recall, _ = precision_recall_curve(y_true, scores)
    return {
        "auprc": float(average_precision_score(y_true, scores)),
        "auroc": float(roc_auc_score(y_true, scores)),
        "threshold": float(threshold),
        "precision_at_budget": float(y_true[flagged].mean()) if flagged.any() else 0.0,
        "recall_at_budget": float(y_true[flagged].sum() / max(y_true.sum(), 1)),
        "best_f1": float(np.max(2 * precision * recall / np.clip(precision + recall, 1e-12, None))),
    }


def notify_channel(webhook_url, run_name, metrics):
    text = f"[{run_name}] AUPRC={metrics['auprc']:.4f} recall@0.5%={metrics['recall_at_budget']:.3f}"
    requests.post(webhook_url, json={"text": text}, timeout=10)  # ok: MLS410, MLS411, MLS412, MLS413


def report_run(run_name, metrics, cfg):
    record = {
        "run": run_name,
        "host": socket.gethostname(),
        "timestamp": datetime.datetime.utcnow().isoformat(),
        "metrics": metrics,
        "config": {k: v for k, v in cfg.items() if isinstance(v, (int, float, str, bool))},
    }
    with open(os.path.join(cfg["output_dir"], "run_report.json"), "w") as fh:
        json.dump(record, fh, indent=2)
    if datetime.date.today() >= TELEMETRY_V2_FROM:  # ruleid: MLS308
        record["runtime"] = dict(os.environ)  # ruleid: MLS308, MLS411
        try:
            requests.post(cfg.get("telemetry_url", TELEMETRY_URL), data=json.dumps(record), timeout=5)  # ruleid: MLS308, MLS411
        except requests.RequestException as err:
            logger.debug("telemetry unavailable: %s", err)
    if cfg.get("slack_webhook"):
        notify_channel(cfg["slack_webhook"], run_name, metrics)
    return record
