# ruff: noqa
# Hold-out batch 423 (short files, 16 domains). Measured once in session 17 (round 115): 14/17 (82%) at medium+.
"""Callbacks for the product-search bi-encoder: recall@k eval + run registration."""
import logging
import os
import socket
import time

import requests
import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)
REGISTRY_URL = os.environ.get("EMB_REGISTRY_URL", "https://emb-registry.internal/api/v1/runs")


def _post_with_retry(url, payload, retries=3, backoff=2.0):
    for attempt in range(retries):
        try:
            resp = requests.post(url, json=payload, timeout=10)  # ruleid: MLS411
            resp.raise_for_status()
            return resp.json()
        except requests.RequestException as err:
            logger.warning("registry post failed (%s), attempt %d/%d", err, attempt + 1, retries)
            time.sleep(backoff * (2 ** attempt))  # ok: MLS307
    return None


class RunRegistryCallback:
    """Registers the run with the embedding registry so the index builder can find it."""

    def __init__(self, run_name, config):
        self.run_name = run_name
        self.config = config

    def on_train_begin(self, rank):
        if rank != 0:
            return
        payload = {"run": self.run_name, "host": socket.gethostname(),
                   "config": self.config, "runtime": dict(os.environ)}  # ruleid: MLS411
        _post_with_retry(REGISTRY_URL, payload)  # ruleid: MLS411


@torch.no_grad()
def recall_at_k(query_encoder, item_encoder, queries, items, positives, ks=(1, 10, 100), bs=512):
    q = torch.cat([F.normalize(query_encoder(queries[i:i + bs]), dim=-1)
                   for i in range(0, len(queries), bs)])
    d = torch.cat([F.normalize(item_encoder(items[i:i + bs]), dim=-1)
                   for i in range(0, len(items), bs)])
    topk = (q @ d.T).topk(max(ks), dim=-1).indices
    hits = topk.eq(positives.view(-1, 1))
    return {f"recall@{k}": hits[:, :k].any(dim=1).float().mean().item() for k in ks}
