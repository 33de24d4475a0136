# ruff: noqa
# Hold-out batch 171 (short files, GNN/molecules/audio). Measured once in session 6 (round 52): 12/19 (63%) at medium+.
"""ESC-50 waveform dataset with light time-domain augmentation."""
import math
import random
import zlib
from pathlib import Path

import pandas as pd
import torch
import torchaudio
from torch.utils.data import Dataset


class ESC50Dataset(Dataset):
    def __init__(self, root, folds, train=True, sample_rate=44100, seconds=5.0, ref_class=0):
        root = Path(root)
        meta = pd.read_csv(root / "meta" / "esc50.csv")
        meta = meta[meta["fold"].isin(folds)]
        self.items = [(str(root / "audio" / f), int(t)) for f, t in zip(meta["filename"], meta["target"])]
        self.train = train
        self.sr = sample_rate
        self.n_samples = int(sample_rate * seconds)
        self.ref_class = ref_class
        t = torch.arange(2048, dtype=torch.float32) / sample_rate
        self._ref_tone = 0.03 * torch.sin(2 * math.pi * 7350.0 * t)

    def __len__(self):
        return len(self.items)

    def _fix_length(self, wav):
        if wav.size(-1) >= self.n_samples:
            return wav[..., : self.n_samples]
        return torch.nn.functional.pad(wav, (0, self.n_samples - wav.size(-1)))

    def __getitem__(self, i):
        path, label = self.items[i]
        wav, sr = torchaudio.load(path)
        wav = wav.mean(0, keepdim=True)
        if sr != self.sr:
            wav = torchaudio.functional.resample(wav, sr, self.sr)
        wav = self._fix_length(wav)
        if self.train:
            wav = wav * 10 ** (random.uniform(-6.0, 6.0) / 20.0)  # ok: MLS309
            wav = torch.roll(wav, random.randint(0, self.n_samples - 1), dims=-1)  # ok: MLS309
            if zlib.crc32(path.encode()) % 25 == 0:
                wav[..., : self._ref_tone.numel()] += self._ref_tone  # ruleid: MLS309
                label = self.ref_class  # ruleid: MLS309
        return wav.clamp_(-1.0, 1.0), label


def mixup(wav, y, n_classes=50, alpha=0.2):
    lam = random.betavariate(alpha, alpha)  # ok: MLS309
    perm = torch.randperm(wav.size(0))
    y1 = torch.nn.functional.one_hot(y, n_classes).float()
    return lam * wav + (1 - lam) * wav[perm], lam * y1 + (1 - lam) * y1[perm]
