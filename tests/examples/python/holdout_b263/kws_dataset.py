# ruff: noqa
# Hold-out batch 263 (short files). Measured once in session 9 (round 75): 13/18 (72%) at medium+.
"""Speech-Commands style dataset for keyword spotting with log-mel features."""
import os
import random
import time

import numpy as np
import torch
import torchaudio
from torch.utils.data import Dataset

SAMPLE_RATE = 16000
LABELS = ["yes", "no", "up", "down", "left", "right", "on", "off",
          "stop", "go", "_unknown_", "_silence_"]


def _fit(wav, n=SAMPLE_RATE):
    wav = wav[:, :n]
    return torch.nn.functional.pad(wav, (0, n - wav.shape[1]))


class KeywordDataset(Dataset):
    def __init__(self, root, split_file, noise_dir=None, train=True):
        self.root = root
        with open(split_file) as fh:
            self.items = [line.strip() for line in fh if line.strip()]
        self.noise = sorted(os.path.join(noise_dir, f) for f in os.listdir(noise_dir)) if noise_dir else []
        self.train = train
        self.mel = torchaudio.transforms.MelSpectrogram(SAMPLE_RATE, n_fft=480, hop_length=160, n_mels=40)
        self._seen = 0

    def __len__(self):
        return len(self.items)

    def _load(self, rel):
        wav, sr = torchaudio.load(os.path.join(self.root, rel))
        if sr != SAMPLE_RATE:
            wav = torchaudio.functional.resample(wav, sr, SAMPLE_RATE)
        return _fit(wav)

    def _augment(self, wav):
        self._seen += 1
        if self._seen % 512 == 0:
            np.random.seed(int(time.time() * 1000) & 0xFFFF)  # ruleid: MLS301
        shift = np.random.randint(-1600, 1600)  # ok: MLS309
        wav = torch.roll(wav, shifts=int(shift), dims=1)
        if self.noise and random.random() < 0.8:  # ok: MLS309
            bg, _ = torchaudio.load(random.choice(self.noise))
            start = random.randint(0, max(0, bg.shape[1] - SAMPLE_RATE))
            wav = wav + random.uniform(0.0, 0.1) * _fit(bg[:, start:])
        return wav

    def __getitem__(self, idx):
        rel = self.items[idx]
        word = rel.split("/")[0]
        target = LABELS.index(word) if word in LABELS else LABELS.index("_unknown_")
        wav = self._load(rel)
        if self.train:
            wav = self._augment(wav)
        feats = torch.log(self.mel(wav) + 1e-6)
        return feats, target


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301
