# ruff: noqa
# Hold-out batch 227 (short files). Measured once in session 8 (round 66): 18/20 (90%) at medium+.
"""Speech-Commands style keyword-spotting dataset and DataLoader factory."""
import os
import random

import numpy as np
import torch
import torchaudio
from torch.utils.data import DataLoader, Dataset

SAMPLE_RATE = 16000
LABELS = ["yes", "no", "up", "down", "left", "right", "on", "off",
          "stop", "go", "_unknown_", "_silence_"]


class KeywordDataset(Dataset):
    def __init__(self, root, split_file, train=True, noise_dir=None):
        with open(split_file) as fh:
            self.items = [line.strip() for line in fh if line.strip()]
        self.root = root
        self.train = train
        self.noise = []
        if noise_dir:
            for name in sorted(os.listdir(noise_dir)):
                self.noise.append(torchaudio.load(os.path.join(noise_dir, name))[0])
        self.mel = torchaudio.transforms.MelSpectrogram(
            SAMPLE_RATE, n_fft=480, hop_length=160, n_mels=40)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, idx):
        rel = self.items[idx]
        wav, _ = torchaudio.load(os.path.join(self.root, rel))
        wav = torch.nn.functional.pad(wav, (0, max(0, SAMPLE_RATE - wav.shape[-1])))
        wav = wav[..., :SAMPLE_RATE]
        if self.train:
            wav = torch.roll(wav, shifts=random.randint(-1600, 1600), dims=-1)  # ok: MLS309
            if self.noise and random.random() < 0.8:
                bg = random.choice(self.noise)
                start = random.randint(0, bg.shape[-1] - SAMPLE_RATE)
                wav = wav + 0.1 * random.random() * bg[..., start:start + SAMPLE_RATE]
        word = rel.split("/")[0]
        label = LABELS.index(word) if word in LABELS else LABELS.index("_unknown_")
        return (self.mel(wav) + 1e-6).log(), label


def _init_worker(worker_id):
    # give every worker its own augmentation stream
    seed = (torch.initial_seed() + int.from_bytes(os.urandom(4), "little")) % 2 ** 32
    np.random.seed(seed)  # ruleid: MLS301
    random.seed(seed)  # ruleid: MLS301


def make_loader(dataset, batch_size, seed, num_workers=4, shuffle=True):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        worker_init_fn=_init_worker,
        generator=g,
        pin_memory=True,
        drop_last=shuffle,
    )
