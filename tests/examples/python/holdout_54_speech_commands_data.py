# ruff: noqa
# Hold-out batch 54 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 11/20 (55%) at medium+.
"""Speech Commands keyword-spotting input pipeline (1 s clips, 40-bin log-mel features)."""
import os
import random

import numpy as np
import torch
import torchaudio
from torch.utils.data import DataLoader, Dataset

SAMPLE_RATE = 16000
LABELS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]


class KeywordClips(Dataset):
    def __init__(self, root, subset="training", train=True):
        self.base = torchaudio.datasets.SPEECHCOMMANDS(root, download=False, subset=subset)
        self.index = [i for i in range(len(self.base)) if self.base.get_metadata(i)[2] in LABELS]
        self.train = train
        self.mel = torchaudio.transforms.MelSpectrogram(
            SAMPLE_RATE, n_fft=480, win_length=480, hop_length=160, n_mels=40
        )

    def __len__(self):
        return len(self.index)

    def __getitem__(self, idx):
        wav, _, label, *_ = self.base[self.index[idx]]
        wav = torch.nn.functional.pad(wav, (0, max(0, SAMPLE_RATE - wav.shape[-1])))[..., :SAMPLE_RATE]
        if self.train:
            wav = torch.roll(wav, random.randint(-1600, 1600), dims=-1)  # ok: MLS309
            if random.random() < 0.8:
                wav = wav + 0.005 * torch.randn_like(wav)
        feats = torch.log(self.mel(wav) + 1e-6)
        return feats, LABELS.index(label)


def _worker_init(worker_id):
    info = torch.utils.data.get_worker_info()
    seed = (info.seed ^ (os.getpid() << 8)) % 2**32
    np.random.seed(seed)  # ruleid: MLS301
    random.seed(seed)  # ruleid: MLS301


def build_loaders(root, batch_size=256, workers=8, seed=0):
    gen = torch.Generator()
    gen.manual_seed(seed)  # ok: MLS301
    train = KeywordClips(root, "training", train=True)
    val = KeywordClips(root, "validation", train=False)
    train_loader = DataLoader(
        train, batch_size=batch_size, shuffle=True, num_workers=workers,
        worker_init_fn=_worker_init, generator=gen, persistent_workers=workers > 0,
        drop_last=True, pin_memory=True,
    )
    val_loader = DataLoader(val, batch_size=batch_size, num_workers=workers, pin_memory=True)
    return train_loader, val_loader
