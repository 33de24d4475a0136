# ruff: noqa
# Hold-out batch 72 (benchmark format, audio/video; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 14/19 (74%) at medium+.
"""Log-mel dataset for audio event tagging with SpecAugment, random gain and batch-level mixup."""
import random

import numpy as np
import torch
import torchaudio
from torch.utils.data import Dataset


class SpecAugment(torch.nn.Module):
    def __init__(self, freq_mask=24, time_mask=64, n_freq=2, n_time=2):
        super().__init__()
        self.freq = torchaudio.transforms.FrequencyMasking(freq_mask, iid_masks=True)
        self.time = torchaudio.transforms.TimeMasking(time_mask, iid_masks=True)
        self.n_freq, self.n_time = n_freq, n_time

    def forward(self, spec):
        for _ in range(self.n_freq):
            spec = self.freq(spec)
        for _ in range(self.n_time):
            spec = self.time(spec)
        return spec


class LogMelClips(Dataset):
    def __init__(self, index_npz, num_classes=527, train=True, smoothing=0.05):
        data = np.load(index_npz, allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.paths, self.targets = data["paths"], data["targets"]  # targets: N x num_classes multi-hot
        self.train, self.smoothing, self.num_classes = train, smoothing, num_classes
        self.mel = torchaudio.transforms.MelSpectrogram(32000, n_fft=1024, hop_length=320, n_mels=128)
        self.aug = SpecAugment()
        self.val_gen = torch.Generator().manual_seed(1337)  # ok: MLS301

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, idx):
        wav, _ = torchaudio.load(str(self.paths[idx]))
        wav = wav.mean(0)[: 32000 * 10]
        if self.train:
            wav = wav * 10 ** (random.uniform(-8, 4) / 20)  # ok: MLS309
        else:
            wav = wav + 1e-4 * torch.randn(wav.shape, generator=self.val_gen)
        spec = torch.log(self.mel(wav) + 1e-6)
        if self.train:
            spec = self.aug(spec.unsqueeze(0)).squeeze(0)
        y = torch.from_numpy(self.targets[idx]).float()
        y = y * (1 - self.smoothing) + self.smoothing / self.num_classes  # ok: MLS309
        return spec, y


def mixup_batch(specs, targets, alpha=0.5):
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(specs.size(0))
    specs = lam * specs + (1 - lam) * specs[perm]
    return specs, lam * targets + (1 - lam) * targets[perm]  # ok: MLS309
