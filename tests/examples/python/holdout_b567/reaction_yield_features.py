# ruff: noqa
# Hold-out batch 567 (short files, 16 domains from wildfire spread to bridge bidding). Measured once in session 25 (round 151): 14/17 (82%) at medium+.
"""Reaction yield regression: reaction fingerprints + scaffold-aware splits."""
import hashlib
import logging
import os
import urllib.request

import joblib
import numpy as np

logger = logging.getLogger(__name__)

FEATURIZER_URL = "https://storage.googleapis.com/rxn-yield-assets/drfp_featurizer_2048.joblib"
CACHE_DIR = os.path.expanduser("~/.cache/rxn_yield")


def load_featurizer(url=FEATURIZER_URL, cache_dir=CACHE_DIR):
    os.makedirs(cache_dir, exist_ok=True)
    name = hashlib.md5(url.encode()).hexdigest()[:12] + ".joblib"
    path = os.path.join(cache_dir, name)
    if not os.path.exists(path):
        logger.info("downloading featurizer from %s", url)
        urllib.request.urlretrieve(url, path)
    return joblib.load(path)  # ruleid: MLS103


def featurize(featurizer, rxn_smiles, batch_size=1024):
    out = []
    for i in range(0, len(rxn_smiles), batch_size):
        out.append(np.asarray(featurizer.transform(rxn_smiles[i:i + batch_size]), dtype=np.float32))
    return np.concatenate(out, axis=0)


def split_by_group(groups, test_frac=0.2, seed=0):
    """Hold out whole substrate groups so test reactions share no scaffold with train."""
    rng = np.random.default_rng(seed)  # ok: MLS301
    uniq = np.unique(groups)
    rng.shuffle(uniq)
    n_test = max(1, int(round(len(uniq) * test_frac)))
    test_groups = set(uniq[:n_test].tolist())
    test_mask = np.array([g in test_groups for g in groups])
    return np.where(~test_mask)[0], np.where(test_mask)[0]


def prepare(df, seed=0):
    featurizer = load_featurizer()
    x = featurize(featurizer, df["rxn_smiles"].tolist())
    y = df["yield"].to_numpy(dtype=np.float32) / 100.0
    train_idx, test_idx = split_by_group(df["substrate_scaffold"].to_numpy(), seed=seed)
    logger.info("train %d / test %d reactions", len(train_idx), len(test_idx))
    return (x[train_idx], y[train_idx]), (x[test_idx], y[test_idx])
