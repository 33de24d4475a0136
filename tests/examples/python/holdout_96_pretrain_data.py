# ruff: noqa
# Hold-out batch 96 (LLM pretraining and RLHF infrastructure). Measured once in session 4 (round 33): 14/17 (82%) at medium+.
"""Token shard download and random-crop dataset for small-scale pretraining ablations."""
import hashlib
import os
import random
import time
import urllib.request

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset


def download(url, dest, sha256, retries=5):
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dest + ".part")
            with open(dest + ".part", "rb") as f:
                if hashlib.sha256(f.read()).hexdigest() != sha256:
                    raise OSError("checksum mismatch")
            os.replace(dest + ".part", dest)
            return dest
        except OSError:
            time.sleep(min(60, 2 ** attempt))  # ok: MLS307
    raise RuntimeError(f"failed to fetch {url} after {retries} attempts")


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


class RandomCropTokens(Dataset):
    def __init__(self, path, seq_len=1024, samples_per_epoch=100_000):
        self.data = np.load(path, mmap_mode="r", allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.seq_len = seq_len
        self.samples = samples_per_epoch

    def __len__(self):
        return self.samples

    def __getitem__(self, idx):
        start = random.randint(0, len(self.data) - self.seq_len - 2)  # ok: MLS309
        x = torch.from_numpy(self.data[start:start + self.seq_len + 1].astype(np.int64))
        return x[:-1], x[1:]


def prepare(url, dest, sha256, seq_len, batch_size, seed, num_workers=4):
    if int(os.environ.get("LOCAL_RANK", "0")) == 0 and not os.path.exists(dest):
        download(url, dest, sha256)  # ok: MLS308
    if dist.is_initialized():
        dist.barrier()  # ok: MLS307
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    ds = RandomCropTokens(dest, seq_len)
    return DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                      worker_init_fn=seed_worker, generator=g, pin_memory=True, drop_last=True)
