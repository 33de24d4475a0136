# ruff: noqa
# Hold-out batch 53 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 9/16 (56%) at medium+.
"""Tokenized preference-pair dataset, DataLoader factory and shard download helper."""
import os
import random
import time
import urllib.request

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader, Dataset

SHARD_URL = "https://data.example.com/rlhf/pairs/{split}-{idx:05d}.npz"


def fetch_shard(split, idx, cache_dir, retries=4):
    dest = os.path.join(cache_dir, f"{split}-{idx:05d}.npz")
    if os.path.exists(dest):
        return dest
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(SHARD_URL.format(split=split, idx=idx), dest)  # ok: MLS411, MLS412
            return dest
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"failed to download shard {idx} after {retries} attempts")


def load_config(path):
    with open(path) as fh:
        return yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


class PrefPairs(Dataset):
    """Arrays: prompt/chosen/rejected token ids, right-padded, plus their lengths."""

    def __init__(self, path, prompt_crop_p=0.1, min_prompt=16):
        data = np.load(path, allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.arrays = {k: data[k] for k in data.files}
        self.prompt_crop_p = prompt_crop_p
        self.min_prompt = min_prompt

    def __len__(self):
        return len(self.arrays["prompt_len"])

    def __getitem__(self, idx):
        a = self.arrays
        plen = int(a["prompt_len"][idx])
        start = 0
        if plen > self.min_prompt and random.random() < self.prompt_crop_p:
            start = random.randint(0, plen - self.min_prompt)  # ok: MLS309
        prompt = a["prompt"][idx, start:plen].tolist()
        chosen = a["chosen"][idx, : a["chosen_len"][idx]].tolist()
        rejected = a["rejected"][idx, : a["rejected_len"][idx]].tolist()
        return {"chosen_ids": torch.tensor(prompt + chosen), "rejected_ids": torch.tensor(prompt + rejected)}


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def make_loader(ds, batch_size, seed, collate_fn, workers=4):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                      worker_init_fn=seed_worker, generator=g, collate_fn=collate_fn)
