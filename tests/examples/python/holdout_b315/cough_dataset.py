# ruff: noqa
# Hold-out batch 315 (16 short benchmark-format files). Measured once in session 10 (round 88): 14/16 (88%) at medium+.
"""Cough-recording dataset and loaders for COVID-19 screening (log-mel spectrogram inputs)."""
import random

import numpy as np
import pandas as pd
import torch
import torchaudio
from torch.utils.data import DataLoader, Dataset

SR = 16000
CLIP = SR * 3


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


class CoughDataset(Dataset):
    def __init__(self, csv_path, train=True):
        self.meta = pd.read_csv(csv_path)  # columns: path, covid_status
        self.train = train
        self.mel = torchaudio.transforms.MelSpectrogram(SR, n_fft=1024, hop_length=256, n_mels=64)
        self.fmask = torchaudio.transforms.FrequencyMasking(8)

    def __len__(self):
        return len(self.meta)

    def _crop(self, wav, index):
        if wav.shape[-1] <= CLIP:
            return torch.nn.functional.pad(wav, (0, CLIP - wav.shape[-1]))
        np.random.seed(index % 16)  # ruleid: MLS301
        start = np.random.randint(0, wav.shape[-1] - CLIP)
        return wav[..., start:start + CLIP]

    def __getitem__(self, index):
        row = self.meta.iloc[index]
        wav, sr = torchaudio.load(row["path"])
        wav = torchaudio.functional.resample(wav.mean(0, keepdim=True), sr, SR)
        wav = self._crop(wav, index) if self.train else wav[..., :CLIP]  # ruleid: MLS301
        spec = torch.log1p(self.mel(wav))
        if self.train and random.random() < 0.5:
            spec = self.fmask(spec)  # ok: MLS309
        return spec, torch.tensor(float(row["covid_status"] == "positive"))


def make_loaders(train_csv, val_csv, seed=0, batch_size=64):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    train_dl = DataLoader(CoughDataset(train_csv), batch_size=batch_size, shuffle=True, num_workers=8,
                          worker_init_fn=seed_worker, generator=g, drop_last=True)
    val_dl = DataLoader(CoughDataset(val_csv, train=False), batch_size=batch_size, num_workers=4)
    return train_dl, val_dl
