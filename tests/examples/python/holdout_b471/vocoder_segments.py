# ruff: noqa
# Hold-out batch 471 (16 short files, mixed domains). Measured once in session 20 (round 127): 15/17 (88%) at medium+.
"""Waveform/mel segment dataset for HiFi-GAN style vocoder training."""
import random

import torch
import torch.nn.functional as F
import torchaudio
from torch.utils.data import Dataset


class MelSegmentDataset(Dataset):
    def __init__(self, filelist, mel_fn, segment_size=8192, hop_length=256,
                 sample_rate=22050, split=True, shuffle_files=True):
        with open(filelist, encoding="utf-8") as f:
            self.paths = [line.strip().split("|")[0] for line in f if line.strip()]
        if shuffle_files:
            random.Random(1234).shuffle(self.paths)  # ok: MLS301
        self.mel_fn = mel_fn
        self.segment_size = segment_size
        self.hop_length = hop_length
        self.sample_rate = sample_rate
        self.split = split

    def __len__(self):
        return len(self.paths)

    def _load(self, path):
        wav, sr = torchaudio.load(path)
        if sr != self.sample_rate:
            wav = torchaudio.functional.resample(wav, sr, self.sample_rate)
        wav = wav.mean(0, keepdim=True)
        return wav / wav.abs().max().clamp(min=1e-5) * 0.95

    def __getitem__(self, index):
        audio = self._load(self.paths[index])
        if self.split:
            if audio.size(1) >= self.segment_size:
                max_start = audio.size(1) - self.segment_size
                random.seed(index)  # ruleid: MLS301
                start = random.randint(0, max_start)
                start -= start % self.hop_length
                audio = audio[:, start:start + self.segment_size]
            else:
                audio = F.pad(audio, (0, self.segment_size - audio.size(1)))
        mel = self.mel_fn(audio).squeeze(0)
        return mel, audio.squeeze(0), self.paths[index]


def collate_segments(batch):
    mels, audios, names = zip(*batch)
    return torch.stack(mels), torch.stack(audios).unsqueeze(1), list(names)
