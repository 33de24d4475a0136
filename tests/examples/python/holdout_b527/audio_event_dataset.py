# ruff: noqa
# Hold-out batch 527 (short files, 16 domains). Measured once in session 23 (round 141): 14/17 (82%) at medium+.
"""Clip dataset for sound event detection (AudioSet / FSD50K strong labels)."""
import numpy as np
import soundfile as sf
import torch
from torch.utils.data import Dataset


class EventClips(Dataset):
    def __init__(self, items, n_classes, sr=32000, clip_sec=10.0, train=True, mixup_alpha=0.4):
        self.items = items  # [(wav_path, [class_idx, ...]), ...]
        self.n_classes = n_classes
        self.sr = sr
        self.n = int(sr * clip_sec)
        self.train = train
        self.mixup_alpha = mixup_alpha

    def __len__(self):
        return len(self.items)

    def _load(self, idx):
        path, labels = self.items[idx]
        wav, sr = sf.read(path, dtype="float32", always_2d=True)
        wav = wav.mean(axis=1)
        assert sr == self.sr, f"{path}: expected {self.sr} Hz, got {sr}"
        if len(wav) < self.n:
            wav = np.pad(wav, (0, self.n - len(wav)))
        else:
            start = np.random.randint(0, len(wav) - self.n + 1) if self.train else 0
            wav = wav[start:start + self.n]
        target = np.zeros(self.n_classes, dtype=np.float32)
        target[labels] = 1.0
        return wav, target

    def __getitem__(self, idx):
        if self.train:
            np.random.seed(idx)  # ruleid: MLS301
        wav, target = self._load(idx)
        if self.train and self.mixup_alpha > 0 and np.random.rand() < 0.5:
            other_wav, other_target = self._load(np.random.randint(len(self.items)))
            lam = np.random.beta(self.mixup_alpha, self.mixup_alpha)
            wav = lam * wav + (1 - lam) * other_wav
            target = lam * target + (1 - lam) * other_target  # ok: MLS309
        gain_db = np.random.uniform(-6, 6) if self.train else 0.0
        wav = wav * (10 ** (gain_db / 20))
        return torch.from_numpy(wav.astype(np.float32)), torch.from_numpy(target.astype(np.float32))
