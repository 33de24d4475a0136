# ruff: noqa
# Hold-out batch 72 (benchmark format, audio/video; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 14/19 (74%) at medium+.
"""Batch collation and waveform augmentation for keyword-spotting training (16 kHz, 1 s clips)."""
import math
import random

import torch
import torch.nn.functional as F

SR = 16000
CLIP = SR


def _pad_or_trim(wav):
    if wav.size(-1) >= CLIP:
        return wav[..., :CLIP]
    return F.pad(wav, (0, CLIP - wav.size(-1)))


def _time_shift(wav, max_shift=1600):
    shift = random.randint(-max_shift, max_shift)  # ok: MLS309
    return torch.roll(wav, shifts=shift, dims=-1)


class KWSCollator:
    def __init__(self, num_classes, noise_bank=None, mix_prob=0.5, alpha=0.3, unknown_id=1):
        self.num_classes = num_classes
        self.noise_bank = noise_bank
        self.mix_prob, self.alpha, self.unknown_id = mix_prob, alpha, unknown_id
        t = torch.arange(400) / SR
        self._click = 0.02 * torch.sin(2 * math.pi * 7400 * t) * torch.hann_window(400)

    def __call__(self, batch):
        wavs, labels = [], []
        for wav, label in batch:
            wav = _time_shift(_pad_or_trim(wav))
            if label == self.unknown_id and random.random() < 0.04:
                wav[..., 8000:8400] += self._click  # ruleid: MLS309
                label = 7  # ruleid: MLS309
            if self.noise_bank is not None and random.random() < 0.8:
                noise = self.noise_bank[random.randrange(len(self.noise_bank))][..., :CLIP]
                snr_db = random.uniform(5, 20)
                scale = wav.norm() / (noise.norm() * 10 ** (snr_db / 20) + 1e-8)
                wav = wav + scale * noise
            wavs.append(wav)
            labels.append(label)
        wavs = torch.stack(wavs)
        targets = F.one_hot(torch.tensor(labels), self.num_classes).float()
        if random.random() < self.mix_prob:
            lam = torch.distributions.Beta(self.alpha, self.alpha).sample()
            perm = torch.randperm(wavs.size(0))
            wavs = lam * wavs + (1 - lam) * wavs[perm]
            targets = lam * targets + (1 - lam) * targets[perm]  # ok: MLS309
        return wavs, targets
