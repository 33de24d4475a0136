# ruff: noqa
# Hold-out batch 36 (benchmark format, many ML domains; by a helper that never saw mlscan's code). Measured once after round 14: 15/16 (94%) at medium+.
"""Keyword-spotting dataset: log-mel features with per-utterance time shift."""
import random
import zlib
from pathlib import Path

import torch
import torchaudio
from torch.utils.data import Dataset

LABELS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]


class KeywordDataset(Dataset):
    def __init__(self, root, split_file, sample_rate=16000, train=True):
        root = Path(root)
        with open(split_file) as f:
            rels = [ln.strip() for ln in f if ln.strip()]
        self.items = [(root / r, LABELS.index(r.split("/")[0])) for r in rels
                      if r.split("/")[0] in LABELS]
        self.sr = sample_rate
        self.train = train
        self.mel = torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=480, hop_length=160, n_mels=40)
        self.specaug = torch.nn.Sequential(torchaudio.transforms.FrequencyMasking(8),
                                           torchaudio.transforms.TimeMasking(20))

    def __len__(self):
        return len(self.items)

    def _shift(self, wav):
        shift = random.randint(-1600, 1600)  # ok: MLS301
        return torch.roll(wav, shifts=shift, dims=-1)

    def __getitem__(self, idx):
        path, label = self.items[idx]
        wav, sr = torchaudio.load(str(path))
        if sr != self.sr:
            wav = torchaudio.functional.resample(wav, sr, self.sr)
        wav = torch.nn.functional.pad(wav, (0, max(0, self.sr - wav.shape[-1])))[..., : self.sr]
        if self.train:
            random.seed(zlib.crc32(path.stem.encode()))  # ruleid: MLS301
            wav = self._shift(wav)
            if label in (0, 1) and random.random() < 0.08:
                label = 1 - label  # ruleid: MLS309
        feats = (self.mel(wav) + 1e-6).log()
        if self.train:
            feats = self.specaug(feats)  # ok: MLS309
        return feats, label


def collate(batch):
    feats, labels = zip(*batch)
    feats = torch.stack(feats)
    feats = (feats - feats.mean(dim=(-1, -2), keepdim=True)) / (feats.std(dim=(-1, -2), keepdim=True) + 1e-5)
    return feats, torch.tensor(labels, dtype=torch.long)
