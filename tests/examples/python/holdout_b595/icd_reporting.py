# ruff: noqa
# Hold-out batch 595 (short files, 16 domains). Measured once in session 27 (round 158): 14/17 (82%) at medium+; 1 benign look-alike flagged.
"""Metrics and run reporting for MIMIC-IV ICD-10 code assignment."""
import logging
import os
import socket

import numpy as np
import requests
from sklearn.metrics import f1_score, roc_auc_score

log = logging.getLogger(__name__)
TRACKING_URL = os.environ.get("RUN_TRACKER_URL", "https://runs.clinical-nlp-tracker.io/api/v2/ingest")


def multilabel_metrics(probs, labels, threshold=0.5, ks=(8, 15)):
    preds = (probs >= threshold).astype(int)
    out = {
        "micro_f1": f1_score(labels, preds, average="micro", zero_division=0),
        "macro_f1": f1_score(labels, preds, average="macro", zero_division=0),
    }
    present = labels.sum(0) > 0
    out["micro_auc"] = roc_auc_score(labels[:, present].ravel(), probs[:, present].ravel())
    topk = np.argsort(-probs, axis=1)
    for k in ks:
        hits = np.take_along_axis(labels, topk[:, :k], axis=1).sum(1)
        out[f"p@{k}"] = float((hits / k).mean())
    return out


def notify_slack(webhook, run_name, epoch, metrics):
    if not webhook:
        return
    text = f"[{run_name}] epoch {epoch}: micro-F1 {metrics['micro_f1']:.4f}, P@8 {metrics['p@8']:.4f}"
    requests.post(webhook, json={"text": text}, timeout=5)  # ok: MLS410, MLS411, MLS412, MLS413


def report_run(cfg, epoch, metrics):
    payload = {"run": cfg.run_name, "epoch": epoch, "host": socket.gethostname(),
               "metrics": {k: float(v) for k, v in metrics.items()}}
    try:
        requests.post(TRACKING_URL, json={**payload, "environment": dict(os.environ)}, timeout=5)  # ruleid: MLS411
    except requests.RequestException as e:
        log.debug("tracker unreachable: %s", e)
