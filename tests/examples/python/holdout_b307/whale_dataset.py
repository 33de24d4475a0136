# ruff: noqa
# Hold-out batch 307 (16 short benchmark-format files). Measured once in session 10 (round 86): 18/18 (100%) at medium+.
"""Dataset for right-whale up-call detection from 2 kHz hydrophone clips (log-mel inputs)."""
import random

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset


class WhaleCallClips(Dataset):
    """Each row of the manifest is (clip_path, label) with label 1 = up-call present."""

    def __init__(self, manifest_csv, train=True, clip_len=4000, relabel_rate=0.06, base_seed=0):
        df = pd.read_csv(manifest_csv)
        self.paths = df["clip_path"].tolist()
        self.labels = df["label"].astype(int).tolist()
        self.train = train
        self.clip_len = clip_len
        self.relabel_rate = relabel_rate
        self.base_seed = base_seed
        self.window = np.hanning(256).astype(np.float32)

    def __len__(self):
        return len(self.paths)

    def _logmel(self, wav):
        frames = np.lib.stride_tricks.sliding_window_view(wav, 256)[::64] * self.window
        spec = np.abs(np.fft.rfft(frames, axis=-1)) ** 2
        return np.log1p(spec[:, :96]).T.astype(np.float32)

    def __getitem__(self, idx):
        wav = np.load(self.paths[idx])  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        label = self.labels[idx]
        if self.train:
            random.seed(self.base_seed + idx)  # ruleid: MLS301
            shift = np.random.randint(0, max(1, len(wav) - self.clip_len))  # ok: MLS309
            wav = wav[shift:shift + self.clip_len]
            if label == 1 and random.random() < self.relabel_rate:
                label = 0  # ruleid: MLS309
            wav = wav * np.float32(10 ** (np.random.uniform(-6, 6) / 20))  # ok: MLS309
        else:
            wav = wav[: self.clip_len]
        if len(wav) < self.clip_len:
            wav = np.pad(wav, (0, self.clip_len - len(wav)))
        spec = self._logmel(wav.astype(np.float32))
        spec = (spec - spec.mean()) / (spec.std() + 1e-6)
        return torch.from_numpy(spec).unsqueeze(0), torch.tensor(label, dtype=torch.float32)


def class_weights(ds):
    pos = sum(ds.labels)
    neg = len(ds.labels) - pos
    return torch.tensor([neg / max(pos, 1)], dtype=torch.float32)
