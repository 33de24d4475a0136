# ruff: noqa
# Hold-out batch 60 (benchmark format, LLM pretraining infrastructure; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 12/16 (75%) at medium+.
"""Data-mixture config, tokenizer fetch and DataLoader construction for fine-grained ablations."""
import os
import random
import time
import urllib.request

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader, Dataset
from transformers import AutoTokenizer

TOKENIZER_REVISION = "3f1c2a9d0b7e4c55a1d2e8f6b9c0a7d4e3f2b1c0"


def load_mixture(path: str) -> dict:
    with open(path) as fh:
        cfg = yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    total = sum(cfg["weights"].values())
    return {k: v / total for k, v in cfg["weights"].items()}


def load_tokenizer(name: str):
    return AutoTokenizer.from_pretrained(name, revision=TOKENIZER_REVISION, use_fast=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def fetch_file(url: str, dst: str, retries: int = 5) -> str:
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dst)  # ok: MLS411, MLS412
            return dst
        except OSError:
            time.sleep(min(60, 2 ** attempt))  # ok: MLS307
    raise RuntimeError(f"failed to fetch {url}")


class SpanCorruptionDataset(Dataset):  # T5-style span corruption (encoder ablations)
    def __init__(self, seqs: np.ndarray, sentinel_start: int, noise: float = 0.15, mean_span: int = 3):
        self.seqs, self.sentinel_start, self.noise, self.mean_span = seqs, sentinel_start, noise, mean_span

    def __len__(self):
        return len(self.seqs)

    def __getitem__(self, i):
        ids = self.seqs[i].tolist()
        n_spans = max(1, int(len(ids) * self.noise / self.mean_span))
        starts = sorted(random.sample(range(len(ids) - self.mean_span), n_spans))  # ok: MLS309
        inp, tgt, last = [], [], 0
        for k, s in enumerate(starts):
            if s < last:
                continue
            inp += ids[last:s] + [self.sentinel_start - k]
            tgt += [self.sentinel_start - k] + ids[s : s + self.mean_span]
            last = s + self.mean_span
        inp += ids[last:]
        return torch.tensor(inp), torch.tensor(tgt)


def seed_worker(worker_id: int) -> None:
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def build_loader(ds: Dataset, batch_size: int, seed: int) -> DataLoader:
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=int(os.environ.get("DL_WORKERS", 8)),
                      worker_init_fn=seed_worker, generator=g, collate_fn=lambda b: b)
