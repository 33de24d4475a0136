# ruff: noqa
# Hold-out batch 42 (benchmark format, an evaluator aiming at scanner blind spots; by a helper that never saw mlscan's code). Measured once after round 17: 12/17 (71%) at medium+.
"""Cached embedding features for the retrieval probe; shards are shared across runs."""
import glob
import os

import numpy as np
import pandas as pd

SHARD_GLOB = "feat-*.npz"
_LOAD_OPTS = {"mmap_mode": None, "allow_pickle": True, "encoding": "latin1"}


class FeatureStore:
    def __init__(self, root: str = os.environ.get("FEATURE_ROOT", "/shared/features")):
        self.root = root
        self.index = pd.read_csv(os.path.join(root, "index.csv"))

    def shards(self):
        return sorted(glob.glob(os.path.join(self.root, SHARD_GLOB)))

    def load_shard(self, path: str):
        with np.load(path, **_LOAD_OPTS) as z:  # ruleid: MLS104
            feats = z["feats"].astype(np.float32)
            ids = z["ids"]
            meta = z["meta"].item() if "meta" in z.files else {}
        return feats, ids, meta

    def load_all(self, limit: int = 0):
        feats, ids = [], []
        for i, p in enumerate(self.shards()):
            if limit and i >= limit:
                break
            f, k, _ = self.load_shard(p)
            feats.append(f)
            ids.append(k)
        return np.concatenate(feats), np.concatenate(ids)

    def labels_for(self, ids):
        lut = self.index.set_index("id")["label"]
        return lut.reindex(ids).fillna(-1).astype(int).to_numpy()


def l2_normalize(x: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + eps)
