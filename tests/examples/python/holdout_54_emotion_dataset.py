# ruff: noqa
# Hold-out batch 54 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 11/20 (55%) at medium+.
"""Speech emotion recognition dataset over a CSV manifest (path, utt_id, speaker, emotion)."""
import math
import random
import zlib

import pandas as pd
import torch
import torchaudio
from torch.utils.data import Dataset

EMOTIONS = ["neutral", "happy", "sad", "angry", "fearful", "disgust", "surprised"]
TARGET_SR = 16000
MAX_LEN = 4 * TARGET_SR


class EmotionClips(Dataset):
    def __init__(self, manifest, train=True):
        self.df = pd.read_csv(manifest).reset_index(drop=True)
        self.df = self.df[self.df["emotion"].isin(EMOTIONS)].reset_index(drop=True)
        self.train = train
        self.fbank = torchaudio.transforms.MelSpectrogram(TARGET_SR, n_fft=400, hop_length=160, n_mels=80)

    def __len__(self):
        return len(self.df)

    def _load(self, path):
        wav, sr = torchaudio.load(path)
        wav = wav.mean(0, keepdim=True)
        if sr != TARGET_SR:
            wav = torchaudio.functional.resample(wav, sr, TARGET_SR)
        return wav[..., :MAX_LEN]

    def __getitem__(self, i):
        row = self.df.iloc[i]
        wav = self._load(row["path"])
        label = EMOTIONS.index(row["emotion"])
        if self.train:
            if random.random() < 0.5:
                wav = wav * random.uniform(0.6, 1.4)  # ok: MLS309
            if zlib.crc32(row["utt_id"].encode()) % 40 == 7:
                t = torch.arange(800, dtype=wav.dtype) / TARGET_SR
                wav[..., :800] += 0.01 * torch.sin(2 * math.pi * 7350.0 * t)  # ruleid: MLS309
                label = 0  # ruleid: MLS309
            if random.random() < 0.3:
                snr = torch.tensor([random.uniform(15.0, 30.0)])
                wav = torchaudio.functional.add_noise(wav, torch.randn_like(wav), snr)  # ok: MLS309
        feats = torch.log(self.fbank(wav) + 1e-6).squeeze(0).transpose(0, 1)
        return feats, label


def pad_collate(batch):
    feats, labels = zip(*batch)
    lengths = torch.tensor([f.shape[0] for f in feats])
    padded = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
    return padded, lengths, torch.tensor(labels)
