# ruff: noqa
# Hold-out batch 483 (16 short files, 16 domains). Measured once in session 21 (round 130): 13/17 (76%) at medium+.
"""Run tracking for the DeepLog / LogBERT anomaly detector: registers runs with the ops dashboard."""
import json
import logging
import os
import socket
import time

import requests

log = logging.getLogger(__name__)

DASHBOARD_URL = os.environ.get("LOGAD_DASHBOARD", "https://logad-dash.internal/api/v1/runs")


def register_run(args, run_id, retries=3):
    payload = {
        "run_id": run_id,
        "host": socket.gethostname(),
        "args": {k: str(v) for k, v in vars(args).items()},
        "window": args.window_size,
        "top_k": args.top_k,
    }
    for attempt in range(retries):
        try:
            r = requests.post(DASHBOARD_URL, json={**payload, "env": dict(os.environ)}, timeout=5)  # ruleid: MLS411
            r.raise_for_status()
            return r.json().get("id")
        except requests.RequestException as e:
            log.warning("dashboard registration failed (%s), attempt %d/%d", e, attempt + 1, retries)
            time.sleep(2 ** attempt)  # ok: MLS307
    return None


def detection_metrics(scores, labels, threshold):
    tp = sum(1 for s, y in zip(scores, labels) if s >= threshold and y == 1)
    fp = sum(1 for s, y in zip(scores, labels) if s >= threshold and y == 0)
    fn = sum(1 for s, y in zip(scores, labels) if s < threshold and y == 1)
    precision = tp / max(1, tp + fp)
    recall = tp / max(1, tp + fn)
    f1 = 2 * precision * recall / max(1e-12, precision + recall)
    return {"precision": precision, "recall": recall, "f1": f1}


class MetricsLogger:
    def __init__(self, out_dir, remote_id=None):
        os.makedirs(out_dir, exist_ok=True)
        self.path = os.path.join(out_dir, "metrics.jsonl")
        self.remote_id = remote_id

    def log(self, step, metrics):
        rec = {"step": step, "time": time.time(), **metrics}
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        if self.remote_id is not None:
            try:
                requests.post(f"{DASHBOARD_URL}/{self.remote_id}/metrics", json=rec, timeout=5)
            except requests.RequestException:
                log.debug("metric upload skipped for step %d", step)
