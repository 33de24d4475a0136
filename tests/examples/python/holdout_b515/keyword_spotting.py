# ruff: noqa
# Hold-out batch 515 (short files, 16 domains). Measured once in session 23 (round 138): 14/17 (82%) at medium+.
"""Collate and augmentation utilities for Speech Commands keyword spotting."""
import random

import torch
import torch.nn.functional as F

LABELS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go",
          "_silence_", "_unknown_"]
LABEL_TO_IDX = {w: i for i, w in enumerate(LABELS)}
UNKNOWN_IDX = LABEL_TO_IDX["_unknown_"]
SAMPLE_RATE = 16000


def pad_or_trim(wav, length=SAMPLE_RATE):
    if wav.shape[-1] >= length:
        return wav[..., :length]
    return F.pad(wav, (0, length - wav.shape[-1]))


def time_shift(wav, max_shift_ms=100):
    max_shift = int(SAMPLE_RATE * max_shift_ms / 1000)
    shift = random.randint(-max_shift, max_shift)
    return torch.roll(wav, shifts=shift, dims=-1)


def mix_background(wav, noises, prob=0.8, max_gain=0.1):
    if not noises or random.random() > prob:
        return wav
    noise = random.choice(noises)
    start = random.randint(0, max(0, noise.shape[-1] - wav.shape[-1]))
    seg = pad_or_trim(noise[..., start:start + wav.shape[-1]], wav.shape[-1])
    return wav + random.uniform(0.0, max_gain) * seg


class KWSCollate:
    def __init__(self, noises=None, train=True, unknown_mix=0.1):
        self.noises = noises or []
        self.train = train
        self.unknown_mix = unknown_mix

    def __call__(self, batch):
        waves, targets = [], []
        for wav, label in batch:
            wav = pad_or_trim(wav)
            if self.train:
                wav = time_shift(wav)  # ok: MLS309
                wav = mix_background(wav, self.noises)
                if label < LABEL_TO_IDX["_silence_"] and random.random() < self.unknown_mix:
                    label = UNKNOWN_IDX  # ruleid: MLS309
            waves.append(wav)
            targets.append(label)
        return torch.stack(waves), torch.tensor(targets, dtype=torch.long)
