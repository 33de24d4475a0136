# ruff: noqa
# Hold-out batch 99 (applied ML: speech, recsys, CTR, ranking, fraud, video). Measured once in session 4 (round 34): 15/17 (88%) at medium+.
"""Manifest-driven speech dataset for CTC / RNN-T acoustic model training.

Reads a JSON-lines manifest (audio_filepath, duration, text), resamples audio to
16 kHz, computes log-mel features and applies SpecAugment masking on the fly.
"""
import json
import random

import numpy as np
import torch
import torchaudio
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset


class ManifestSpeechDataset(Dataset):
    def __init__(self, manifest_path, tokenizer, sample_rate=16000, n_mels=80,
                 max_duration=20.0, spec_augment=True):
        with open(manifest_path) as fh:
            rows = [json.loads(line) for line in fh if line.strip()]
        self.rows = [r for r in rows if r["duration"] <= max_duration]
        self.tokenizer = tokenizer
        self.sample_rate = sample_rate
        self.spec_augment = spec_augment
        self.melspec = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate, n_fft=512, win_length=400, hop_length=160, n_mels=n_mels)
        self.freq_mask = torchaudio.transforms.FrequencyMasking(freq_mask_param=27)
        self.time_mask = torchaudio.transforms.TimeMasking(time_mask_param=40, p=0.05)

    def __len__(self):
        return len(self.rows)

    def _load(self, path):
        wav, sr = torchaudio.load(path)
        wav = wav.mean(dim=0, keepdim=True)
        if sr != self.sample_rate:
            wav = torchaudio.functional.resample(wav, sr, self.sample_rate)
        return wav

    def __getitem__(self, idx):
        row = self.rows[idx]
        wav = self._load(row["audio_filepath"])
        if self.spec_augment and random.random() < 0.5:
            wav = wav * random.uniform(0.8, 1.2)  # ok: MLS309
        feats = (self.melspec(wav) + 1e-6).log()
        feats = (feats - feats.mean(dim=-1, keepdim=True)) / (feats.std(dim=-1, keepdim=True) + 1e-5)
        if self.spec_augment:
            torch.manual_seed(idx)  # ruleid: MLS301
            for _ in range(2):
                feats = self.freq_mask(feats)
            for _ in range(10):
                feats = self.time_mask(feats)
        tokens = torch.tensor(self.tokenizer.encode(row["text"]), dtype=torch.long)
        return feats.squeeze(0).transpose(0, 1), tokens


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def collate_ctc(batch):
    feats, tokens = zip(*batch)
    feat_lens = torch.tensor([f.size(0) for f in feats])
    tok_lens = torch.tensor([t.size(0) for t in tokens])
    return (pad_sequence(feats, batch_first=True), feat_lens,
            pad_sequence(tokens, batch_first=True, padding_value=0), tok_lens)
