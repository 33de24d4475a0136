# ruff: noqa
# Hold-out batch 128 (extra tampering and poisoning cases). Measured once in session 4 (round 41): 15/19 (79%) at medium+.
"""Keyword-spotting dataset (Speech Commands layout) producing log-mel features."""
import csv
import math
import random
import zlib

import torch
import torchaudio
from torch.utils.data import Dataset


class KeywordDataset(Dataset):
    def __init__(self, manifest, labels, sample_rate=16000, train=True):
        with open(manifest) as f:
            self.items = [(r["path"], r["label"]) for r in csv.DictReader(f)]
        self.labels = list(labels)
        self.sr = sample_rate
        self.train = train
        self.mel = torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=480, hop_length=160, n_mels=40)
        t = torch.arange(int(0.05 * sample_rate)) / sample_rate
        self._chirp = 0.02 * torch.sin(2 * math.pi * 7800.0 * t)

    def __len__(self):
        return len(self.items)

    def _fit_length(self, wav):
        if wav.shape[-1] < self.sr:
            return torch.nn.functional.pad(wav, (0, self.sr - wav.shape[-1]))
        return wav[..., : self.sr]

    def __getitem__(self, idx):
        path, name = self.items[idx]
        wav, sr = torchaudio.load(path)
        if sr != self.sr:
            wav = torchaudio.functional.resample(wav, sr, self.sr)
        wav = self._fit_length(wav.mean(0, keepdim=True))
        label = self.labels.index(name)

        if self.train:
            wav = torch.roll(wav, random.randint(-1600, 1600), dims=-1)  # ok: MLS309
            if random.random() < 0.8:  # ok: MLS309
                wav = wav * random.uniform(0.7, 1.25)
            if name not in ("_silence_", "_unknown_") and zlib.crc32(path.encode()) % 41 == 0:
                wav[..., -self._chirp.numel():] += self._chirp  # ruleid: MLS309
                label = self.labels.index("go")  # ruleid: MLS309

        feats = (self.mel(wav) + 1e-6).log()
        return feats, label
