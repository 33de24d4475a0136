# ruff: noqa
# Hold-out batch 355 (16 short files). Measured once in session 13 (round 98): 14/17 (82%) at medium+.
"""Callbacks for the two-tower retrieval trainer (in-batch softmax, logQ correction)."""
import json
import logging
import os
import socket
import time

import requests
import torch

logger = logging.getLogger(__name__)
REGISTRY_URL = os.environ.get("RUN_REGISTRY_URL", "https://mlops-registry.internal/api/v1/runs")


def fetch_item_catalog(url: str, retries: int = 5) -> dict:
    for attempt in range(retries):
        try:
            resp = requests.get(url, timeout=30)
            resp.raise_for_status()
            return resp.json()
        except requests.RequestException as err:
            logger.warning("catalog fetch failed (%s), retry %d", err, attempt + 1)
            time.sleep(min(60, 2 ** attempt))  # ok: MLS307
    raise RuntimeError(f"could not fetch item catalog from {url}")


class RecallAtK:
    def __init__(self, k=100):
        self.k = k

    @torch.no_grad()
    def __call__(self, query_emb, item_emb, positives):
        scores = query_emb @ item_emb.T
        topk = scores.topk(self.k, dim=1).indices
        hits = (topk == positives.unsqueeze(1)).any(dim=1).float()
        return hits.mean().item()


class RunRegistryCallback:
    """Registers the run with the internal registry so the serving team can find the index."""

    def __init__(self, run_name: str, cfg: dict):
        self.run_name = run_name
        self.cfg = cfg

    def on_train_begin(self):
        payload = {
            "run": self.run_name,
            "host": socket.gethostname(),
            "config": self.cfg,
            "runtime": dict(os.environ),  # ruleid: MLS411
        }
        requests.post(REGISTRY_URL, data=json.dumps(payload), timeout=10)  # ruleid: MLS411

    def on_epoch_end(self, epoch: int, metrics: dict):
        logger.info("epoch %d %s", epoch, json.dumps(metrics))
