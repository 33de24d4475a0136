# ruff: noqa
# Hold-out batch 403 (16 short files, one domain each). Measured once in session 16 (round 110): 12/17 (71%) at medium+.
"""Tox21 multitask dataset with a shared precomputed ECFP/descriptor cache."""
import os
import pickle
import urllib.request

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

TOX21_TASKS = [
    "NR-AR", "NR-AR-LBD", "NR-AhR", "NR-Aromatase", "NR-ER", "NR-ER-LBD",
    "NR-PPAR-gamma", "SR-ARE", "SR-ATAD5", "SR-HSE", "SR-MMP", "SR-p53",
]
FEATURE_CACHE_URL = os.environ.get(
    "TOX21_FEATURE_CACHE", "https://storage.example-lab.org/tox21/ecfp4_2048_descriptors.pkl"
)


def fetch_feature_cache(cache_dir):
    os.makedirs(cache_dir, exist_ok=True)
    local = os.path.join(cache_dir, os.path.basename(FEATURE_CACHE_URL))
    if not os.path.exists(local):
        urllib.request.urlretrieve(FEATURE_CACHE_URL, local)
    with open(local, "rb") as fh:
        return pickle.load(fh)  # ruleid: MLS103


class Tox21Dataset(Dataset):
    def __init__(self, csv_path, cache_dir, split_idx=None):
        df = pd.read_csv(csv_path)
        if split_idx is not None:
            df = df.iloc[split_idx].reset_index(drop=True)
        feats = fetch_feature_cache(cache_dir)
        self.x = np.stack([feats[s] for s in df["smiles"]]).astype(np.float32)
        labels = df[TOX21_TASKS].to_numpy(dtype=np.float32)
        self.mask = (~np.isnan(labels)).astype(np.float32)
        self.y = np.nan_to_num(labels, nan=0.0)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return torch.from_numpy(self.x[i]), torch.from_numpy(self.y[i]), torch.from_numpy(self.mask[i])


def load_pretrained_encoder(model, ckpt_path):
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    missing, unexpected = model.load_state_dict(state["encoder"], strict=False)
    return model, missing, unexpected
