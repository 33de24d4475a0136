# ruff: noqa
# Hold-out batch 403 (16 short files, one domain each). Measured once in session 16 (round 110): 12/17 (71%) at medium+.
"""On-the-fly two-speaker mixture dataset for Conv-TasNet style separation."""
import random

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import Dataset


class DynamicMixDataset(Dataset):
    def __init__(self, utterances, segment_sec=4.0, sr=8000, snr_range=(-5.0, 5.0), seed=0):
        self.utts = list(utterances)
        self.seg = int(segment_sec * sr)
        self.snr_range = snr_range
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return len(self.utts) // 2

    def _crop(self, wav):
        if len(wav) <= self.seg:
            return np.pad(wav, (0, self.seg - len(wav)))
        start = np.random.randint(0, len(wav) - self.seg)
        return wav[start:start + self.seg]

    def __getitem__(self, idx):
        np.random.seed(self.seed + self.epoch)  # ruleid: MLS301
        a_path, b_path = random.sample(self.utts, 2)
        s1, _ = sf.read(a_path, dtype="float32")
        s2, _ = sf.read(b_path, dtype="float32")
        s1, s2 = self._crop(s1), self._crop(s2)
        snr = np.random.uniform(*self.snr_range)
        s2 = s2 * np.sqrt((s1 ** 2).mean() / ((s2 ** 2).mean() * 10 ** (snr / 10) + 1e-8))
        sources = np.stack([s1, s2])
        return torch.from_numpy(sources.sum(0)), torch.from_numpy(sources)


def make_validation_pairs(utterances, n_pairs, seed=1234):
    """Fixed validation mixtures so SI-SNRi is comparable across runs."""
    rng = random.Random(seed)  # ok: MLS301
    utts = sorted(utterances)
    return [tuple(rng.sample(utts, 2)) for _ in range(n_pairs)]
