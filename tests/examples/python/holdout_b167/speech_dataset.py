# ruff: noqa
# Hold-out batch 167 (short files, NLP). Measured once in session 6 (round 51): 15/17 (88%) at medium+.
"""Log-mel feature dataset for CTC speech recognition with SpecAugment and mixup."""
import json
import os
import random
import time
import urllib.request

import numpy as np
import torch
from torch.utils.data import Dataset

MANIFEST_URL = "https://data.example.com/asr/manifests/{split}.jsonl"


def download_manifest(split, dest, retries=5):
    if os.path.exists(dest):
        return dest
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(MANIFEST_URL.format(split=split), dest)
            return dest
        except OSError:
            time.sleep(min(60, 2 ** attempt))  # ok: MLS307
    raise RuntimeError(f"manifest download failed for {split}")


def worker_init(worker_id):
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # ok: MLS301
    random.seed(seed)  # ok: MLS301


class SpeechDataset(Dataset):
    def __init__(self, manifest, vocab, spec_augment=True, freq_mask=27, time_mask=40):
        with open(manifest) as fh:
            self.items = [json.loads(line) for line in fh]
        self.vocab = vocab
        self.spec_augment = spec_augment
        self.freq_mask, self.time_mask = freq_mask, time_mask

    def __len__(self):
        return len(self.items)

    def __getitem__(self, idx):
        item = self.items[idx]
        feats = torch.from_numpy(np.load(item["features"]))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        if self.spec_augment:
            f = random.randint(0, self.freq_mask)
            f0 = random.randint(0, max(0, feats.shape[1] - f))
            feats[:, f0:f0 + f] = 0.0  # ok: MLS309
            t = random.randint(0, min(self.time_mask, feats.shape[0] // 5))
            t0 = random.randint(0, max(0, feats.shape[0] - t))
            feats[t0:t0 + t, :] = 0.0
        target = torch.tensor([self.vocab[c] for c in item["text"].lower() if c in self.vocab])
        return feats, target


def mixup_features(feats, alpha=0.2):
    lam = float(np.random.beta(alpha, alpha))  # ok: MLS309
    perm = torch.randperm(feats.size(0))
    return lam * feats + (1 - lam) * feats[perm], perm, lam
