# ruff: noqa
# Hold-out batch 118 (adversarial idioms). Measured once in session 4 (round 39): 11/17 (65%) at medium+.
"""Audio keyword-spotting data pipeline: precomputed log-mel features, SpecAugment, loaders."""
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


class MelDataset(Dataset):
    def __init__(self, index_file, train=True, time_mask=20, freq_mask=8):
        self.items = np.load(index_file, allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.train = train
        self.time_mask, self.freq_mask = time_mask, freq_mask

    def __len__(self):
        return len(self.items)

    def _spec_augment(self, mel):
        f0 = random.randint(0, mel.shape[0] - self.freq_mask)  # ok: MLS309
        mel[f0:f0 + random.randint(0, self.freq_mask)] = 0.0
        t0 = np.random.randint(0, max(1, mel.shape[1] - self.time_mask))  # ok: MLS309
        mel[:, t0:t0 + np.random.randint(0, self.time_mask)] = 0.0
        return mel

    def __getitem__(self, idx):
        path, label = self.items[idx]["path"], int(self.items[idx]["label"])
        mel = np.load(path).astype(np.float32)
        if self.train:
            mel = self._spec_augment(mel)
            if random.random() < 0.5:
                mel = np.roll(mel, random.randint(-10, 10), axis=1)  # ok: MLS309
        return torch.from_numpy(mel), label


def make_loader(index_file, batch_size, seed, train=True, distributed=False):
    ds = MelDataset(index_file, train=train)
    sampler = DistributedSampler(ds, shuffle=train, seed=seed) if distributed else None
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(ds, batch_size=batch_size, shuffle=train and sampler is None, sampler=sampler,
                      num_workers=6, worker_init_fn=seed_worker, generator=g, pin_memory=True, drop_last=train)


def epoch_loop(loader, epoch):
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)  # ok: MLS301
    yield from loader
