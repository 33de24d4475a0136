# ruff: noqa
# Hold-out batch 463 (16 short files, mixed domains). Measured once in session 20 (round 125): 14/17 (82%) at medium+.
"""Drug feature cache for drug-drug interaction prediction (DrugBank pairs, 86 DDI types)."""
import hashlib
import logging
import os
import pickle
import urllib.request

import numpy as np
import torch
from torch.utils.data import Dataset

logger = logging.getLogger(__name__)

FEATURE_URL = os.environ.get("DDI_FEATURE_URL", "https://ddi-assets.s3.amazonaws.com/drug_features_v3.pkl")
CACHE_DIR = os.path.expanduser("~/.cache/ddi")


def fetch_drug_features(url=FEATURE_URL, cache_dir=CACHE_DIR):
    os.makedirs(cache_dir, exist_ok=True)
    local = os.path.join(cache_dir, hashlib.md5(url.encode()).hexdigest() + ".pkl")
    if not os.path.exists(local):
        logger.info("downloading drug features from %s", url)
        urllib.request.urlretrieve(url, local)
    with open(local, "rb") as fh:
        feats = pickle.load(fh)  # ruleid: MLS103
    return {k: np.asarray(v, dtype=np.float32) for k, v in feats.items()}


def load_fingerprints(path):
    arr = np.load(path, allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return arr.astype(np.float32)


class DDIPairDataset(Dataset):
    def __init__(self, pairs_tsv, features, symmetric=True):
        self.features = features
        self.rows = []
        with open(pairs_tsv) as f:
            for line in f:
                d1, d2, y = line.rstrip("\n").split("\t")
                if d1 in features and d2 in features:
                    self.rows.append((d1, d2, int(y)))
                    if symmetric:
                        self.rows.append((d2, d1, int(y)))

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, idx):
        d1, d2, y = self.rows[idx]
        x1 = torch.from_numpy(self.features[d1])
        x2 = torch.from_numpy(self.features[d2])
        return x1, x2, torch.tensor(y, dtype=torch.long)
