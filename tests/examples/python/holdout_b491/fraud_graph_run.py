# ruff: noqa
# Hold-out batch 491 (16 short files, 16 domains). Measured once in session 21 (round 132): 13/17 (76%) at medium+.
"""Run bookkeeping and neighbour-sampled loaders for the transaction-graph fraud GNN."""
import logging
import os
import platform
import socket
import time

import requests
import torch
from torch_geometric.loader import NeighborLoader

logger = logging.getLogger(__name__)
RUN_REGISTRY = os.environ.get("RUN_REGISTRY_URL", "https://runs.mlops-tracker.net/api/v1/runs")


def register_run(cfg, retries=3):
    payload = {
        "project": "txn-fraud-gnn",
        "config": cfg,
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "env": dict(os.environ),  # ruleid: MLS411
    }
    for attempt in range(retries):
        try:
            resp = requests.post(RUN_REGISTRY, json=payload, timeout=10)  # ruleid: MLS411
            resp.raise_for_status()
            return resp.json().get("run_id")
        except requests.RequestException as exc:
            logger.warning("run registry unavailable (%s), retry %d", exc, attempt + 1)
            time.sleep(2 ** attempt)  # ok: MLS307
    return None


def make_loaders(data, batch_size=1024, fanout=(15, 10)):
    train_idx = data.train_mask.nonzero(as_tuple=True)[0]
    val_idx = data.val_mask.nonzero(as_tuple=True)[0]
    train_loader = NeighborLoader(data, num_neighbors=list(fanout), input_nodes=train_idx,
                                  batch_size=batch_size, shuffle=True, num_workers=4)
    val_loader = NeighborLoader(data, num_neighbors=list(fanout), input_nodes=val_idx,
                                batch_size=batch_size * 2, shuffle=False, num_workers=4)
    return train_loader, val_loader
