# ruff: noqa
# Hold-out batch 116 (large-model training infrastructure). Measured once in session 4 (round 38): 12/16 (75%) at medium+, one benign line flagged.
"""T5-style span corruption over pre-tokenized shards (.npy int32 arrays).

Mixture weights and sentinel ids come from ``data.yaml``. Noise is drawn per item
from a generator derived from (seed, epoch, index) so runs are reproducible.
"""
import numpy as np
import torch
import yaml
from torch.utils.data import Dataset


def load_data_config(path):
    with open(path) as f:
        return yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


class SpanCorruption(Dataset):
    def __init__(self, shard_paths, seq_len, sentinel_start, noise=0.15, mean_span=3.0, seed=0):
        self.docs = [np.load(p, mmap_mode="r", allow_pickle=False) for p in shard_paths]  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.index = [(d, s) for d, doc in enumerate(self.docs) for s in range(0, len(doc) - seq_len, seq_len)]
        self.seq_len, self.sentinel_start = seq_len, sentinel_start
        self.noise, self.mean_span = noise, mean_span
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return len(self.index)

    def __getitem__(self, i):
        d, s = self.index[i]
        toks = np.asarray(self.docs[d][s:s + self.seq_len])
        rng = np.random.default_rng((self.seed, self.epoch, i))  # ok: MLS301
        n_noise = max(1, int(round(len(toks) * self.noise)))
        n_spans = max(1, int(round(n_noise / self.mean_span)))
        starts = np.sort(rng.choice(len(toks) - 1, size=n_spans, replace=False))  # ok: MLS309
        mask = np.zeros(len(toks), dtype=bool)
        for st in starts:
            mask[st:st + int(self.mean_span)] = True
        inputs, targets, sid = [], [], self.sentinel_start
        prev = False
        for t, m in zip(toks.tolist(), mask):
            if m and not prev:
                inputs.append(sid)
                targets.append(sid)
                sid -= 1
            (targets if m else inputs).append(t)
            prev = m
        return torch.tensor(inputs), torch.tensor(targets)


def seed_worker(worker_id):
    info = torch.utils.data.get_worker_info()
    np.random.seed((info.seed + worker_id) % 2**32)  # ok: MLS301
