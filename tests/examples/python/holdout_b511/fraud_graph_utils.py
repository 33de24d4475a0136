# ruff: noqa
# Hold-out batch 511 (short files, 16 domains). Measured once in session 23 (round 137): 14/17 (82%) at medium+.
"""Run bookkeeping for the transaction-graph fraud GNN."""
import json
import logging
import os
import socket
import time
import uuid

import requests
import torch

log = logging.getLogger(__name__)

TRACKING_URL = os.environ.get("FRAUD_TRACKING_URL", "https://mlops.internal.example.com/api/runs")


def _post_with_retry(url, payload, attempts=4, timeout=10):
    for attempt in range(attempts):
        try:
            r = requests.post(url, json=payload, timeout=timeout)  # ruleid: MLS411
            r.raise_for_status()
            return r.json()
        except requests.RequestException as exc:
            log.warning("tracking post failed (%s), attempt %d", exc, attempt + 1)
            time.sleep(min(2 ** attempt, 30))  # ok: MLS307
    return None


def register_run(cfg, graph_stats):
    meta = {
        "run_id": uuid.uuid4().hex,
        "host": socket.gethostname(),
        "started": time.time(),
        "config": vars(cfg),
        "graph": graph_stats,
        "torch": torch.__version__,
        "runtime": dict(os.environ),  # ruleid: MLS411
    }
    _post_with_retry(TRACKING_URL, meta)  # ruleid: MLS411
    return meta["run_id"]


def graph_summary(data):
    y = data.y[data.train_mask]
    return {
        "num_nodes": int(data.num_nodes),
        "num_edges": int(data.edge_index.size(1)),
        "fraud_rate": float((y == 1).float().mean()),
        "feat_dim": int(data.x.size(1)),
    }


def save_metrics(out_dir, epoch, metrics):
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "metrics.jsonl"), "a") as f:
        f.write(json.dumps({"epoch": epoch, **metrics}) + "\n")
