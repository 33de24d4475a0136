# ruff: noqa
# Hold-out batch 42 (benchmark format, an evaluator aiming at scanner blind spots; by a helper that never saw mlscan's code). Measured once after round 17: 12/17 (71%) at medium+.
"""Tabular dataset for the churn model: pandas preprocessing, config-driven encoders."""
import importlib
import random

import numpy as np
import pandas as pd
import torch
import yaml
from safetensors.torch import load_file
from torch.utils.data import Dataset


def load_config(path: str) -> dict:
    with open(path) as fh:
        return yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def build_encoder(cfg: dict):
    module, _, cls = cfg["encoder"].rpartition(".")
    return getattr(importlib.import_module(module), cls)(**cfg.get("encoder_args", {}))  # benign look-alike


class ChurnTable(Dataset):
    def __init__(self, csv: str, cfg: dict, train: bool = True):
        df = pd.read_csv(csv)
        self.cat_cols, self.num_cols = cfg["categorical"], cfg["numeric"]
        for c in self.cat_cols:
            df[c] = df[c].astype("category").cat.codes
        stats = np.load(cfg["norm_stats"], allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        df[self.num_cols] = (df[self.num_cols] - stats["mean"]) / stats["std"]
        self.x_cat = df[self.cat_cols].to_numpy(np.int64)
        self.x_num = df[self.num_cols].to_numpy(np.float32)
        self.y = df[cfg["target"]].to_numpy(np.int64)
        self.train = train
        self.noise = cfg.get("feature_noise", 0.01)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        x_num = self.x_num[i].copy()
        if self.train and random.random() < 0.5:
            x_num += np.random.normal(0.0, self.noise, size=x_num.shape).astype(np.float32)  # ok: MLS309
        return torch.from_numpy(self.x_cat[i]), torch.from_numpy(x_num), int(self.y[i])


def load_embeddings(path: str) -> dict:
    return load_file(path, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
