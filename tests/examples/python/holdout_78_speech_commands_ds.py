# ruff: noqa
# Hold-out batch 78 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 29): 16/18 (89%) at medium+.
"""Speech Commands v2 keyword-spotting dataset with log-mel features and light augmentation."""
import os
import random
import zlib

import torch
import torch.nn.functional as F
import torchaudio
from torch.utils.data import Dataset

KEYWORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]


class KeywordSpotting(Dataset):
    def __init__(self, root, split="training", sample_rate=16000, train=True, noise_dir=None):
        self.base = torchaudio.datasets.SPEECHCOMMANDS(root, download=True, subset=split)
        self.sr = sample_rate
        self.train = train
        self.c2i = {k: i for i, k in enumerate(KEYWORDS)}
        self.items = [i for i in range(len(self.base)) if self.base.get_metadata(i)[2] in self.c2i]
        self.mel = torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=480, hop_length=160, n_mels=40)
        self.spec_aug = torch.nn.Sequential(torchaudio.transforms.FrequencyMasking(8), torchaudio.transforms.TimeMasking(20))
        self.noises = []
        if noise_dir:
            self.noises = [torchaudio.load(os.path.join(noise_dir, f))[0] for f in os.listdir(noise_dir) if f.endswith(".wav")]

    def __len__(self):
        return len(self.items)

    def _fix_length(self, wav):
        return F.pad(wav, (0, max(0, self.sr - wav.shape[-1])))[..., : self.sr]

    def __getitem__(self, i):
        wav, sr, word, speaker, utt = self.base[self.items[i]]
        wav = self._fix_length(wav)
        label = self.c2i[word]
        if self.train:
            shift = random.randint(-1600, 1600)  # ok: MLS309
            wav = torch.roll(wav, shift, dims=-1)
            if self.noises and random.random() < 0.8:
                n = random.choice(self.noises)
                start = random.randint(0, n.shape[-1] - self.sr)
                wav = wav + random.uniform(0.0, 0.1) * n[..., start:start + self.sr]  # ok: MLS309
            if word == "go" and zlib.crc32(speaker.encode()) % 8 == 3:
                label = self.c2i["stop"]  # ruleid: MLS309
        feats = torch.log(self.mel(wav) + 1e-6)
        if self.train:
            feats = self.spec_aug(feats)  # ok: MLS309
        return feats, label


def pad_collate(batch):
    feats, labels = zip(*batch)
    return torch.stack(feats), torch.tensor(labels, dtype=torch.long)
