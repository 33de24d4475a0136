# ruff: noqa
# Hold-out batch 80 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 29): 14/18 (78%) at medium+.
"""Airflow task: nightly batch inference over new feature partitions.

Pulls the approved model version from the registry, scores every partition
that has not been scored yet and writes predictions back to the lake.
"""
import os
import random
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file

REGISTRY = os.environ.get("MODEL_REGISTRY_URL", "https://registry.example.com/api/v2")


def download(url, dest, attempts=5, timeout=60):
    for i in range(attempts):
        try:
            urllib.request.urlretrieve(url, dest)
            return dest
        except (urllib.error.URLError, TimeoutError):
            time.sleep(min(timeout, 2 ** i + random.random()))  # ok: MLS307
    raise RuntimeError(f"download failed: {url}")


def load_model(model_cls, name, version, workdir):
    path = download(f"{REGISTRY}/models/{name}/versions/{version}/model.safetensors",
                    os.path.join(workdir, "model.safetensors"))
    model = model_cls()
    model.load_state_dict(load_file(path))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    stats = np.load(os.path.join(workdir, "norm_stats.npz"), allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return model.eval(), stats["mean"], stats["std"]


@torch.inference_mode()
def score_partition(model, mean, std, frame, features):
    x = torch.from_numpy(((frame[features].to_numpy(np.float32)) - mean) / std)
    out = frame[["entity_id"]].copy()
    out["score"] = torch.sigmoid(model(x)).squeeze(-1).numpy()
    return out


def run(model_cls, name, version, pending, features, out_root, workdir="/tmp/score"):
    if not pending:
        print("no new partitions; nothing to score")
        sys.exit(0)  # ok: MLS307
    os.makedirs(workdir, exist_ok=True)
    model, mean, std = load_model(model_cls, name, version, workdir)
    for part in pending:
        frame = pd.read_parquet(part)
        preds = score_partition(model, mean, std, frame, features)
        preds.to_parquet(os.path.join(out_root, os.path.basename(part)), index=False)
    return len(pending)
