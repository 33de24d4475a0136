# ruff: noqa
# Hold-out batch 499 (short files, 16 domains). Measured once in session 22 (round 134): 17/17 (100%) at medium+.
"""Feature vocabulary + checkpoint helpers for the DeepFM CTR model (Criteo layout)."""
import logging
import os
import pickle

import torch

logger = logging.getLogger(__name__)

DENSE_COLS = [f"I{i}" for i in range(1, 14)]
SPARSE_COLS = [f"C{i}" for i in range(1, 27)]


def build_vocab(df, min_count=10):
    vocab = {}
    for col in SPARSE_COLS:
        counts = df[col].value_counts()
        keep = counts[counts >= min_count].index
        vocab[col] = {v: i + 1 for i, v in enumerate(keep)}  # 0 = OOV
    return vocab


def load_or_build_vocab(df, cache_path, min_count=10):
    if cache_path and os.path.exists(cache_path):
        logger.info("loading feature vocab from %s", cache_path)
        with open(cache_path, "rb") as fh:
            return pickle.load(fh)  # ruleid: MLS103
    vocab = build_vocab(df, min_count)
    if cache_path:
        os.makedirs(os.path.dirname(cache_path) or ".", exist_ok=True)
        with open(cache_path, "wb") as fh:
            pickle.dump(vocab, fh)
    return vocab


def encode_sparse(df, vocab):
    out = {}
    for col in SPARSE_COLS:
        mapping = vocab[col]
        out[col] = torch.tensor(df[col].map(mapping).fillna(0).astype("int64").values)
    return out


def encode_dense(df):
    x = torch.tensor(df[DENSE_COLS].fillna(0).clip(lower=0).values, dtype=torch.float32)
    return torch.log1p(x)


def load_checkpoint(model, path, device="cpu"):
    state = torch.load(path, map_location=device, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    missing, unexpected = model.load_state_dict(state["model"], strict=False)
    if missing or unexpected:
        logger.warning("missing=%s unexpected=%s", missing, unexpected)
    return state.get("epoch", 0)
