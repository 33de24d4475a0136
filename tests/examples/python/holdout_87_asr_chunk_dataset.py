# ruff: noqa
# Hold-out batch 87 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 13/17 (76%) at medium+.
"""Chunked streaming dataset for RNN-T training.

Reads a JSONL manifest of (audio_filepath, duration, text) entries, applies
speed perturbation and SpecAugment on the fly, and pads the feature frames to
a whole number of look-ahead chunks so the streaming encoder sees full chunks.
"""
import json
import random

import torch
import torchaudio
from torch.utils.data import Dataset


class StreamingChunkDataset(Dataset):
    def __init__(self, manifest, tokenizer, chunk_frames=64, sample_rate=16000,
                 n_freq_masks=2, n_time_masks=10, max_duration=20.0):
        with open(manifest, encoding="utf-8") as fh:
            rows = [json.loads(line) for line in fh if line.strip()]
        self.entries = [r for r in rows if r["duration"] <= max_duration]
        self.tokenizer = tokenizer
        self.chunk_frames = chunk_frames
        self.sample_rate = sample_rate
        self.fbank = torchaudio.transforms.MelSpectrogram(
            sample_rate, n_fft=512, win_length=400, hop_length=160, n_mels=80)
        self.freq_mask = torchaudio.transforms.FrequencyMasking(27)
        self.time_mask = torchaudio.transforms.TimeMasking(40, p=0.05)
        self.n_freq_masks = n_freq_masks
        self.n_time_masks = n_time_masks
        # snapshot so that augmentation can be replayed after a resume
        self._aug_state = torch.get_rng_state()

    def __len__(self):
        return len(self.entries)

    def _spec_augment(self, feats):
        torch.set_rng_state(self._aug_state)  # ruleid: MLS301
        for _ in range(self.n_freq_masks):
            feats = self.freq_mask(feats)
        for _ in range(self.n_time_masks):
            feats = self.time_mask(feats)
        return feats

    def __getitem__(self, idx):
        item = self.entries[idx]
        wav, sr = torchaudio.load(item["audio_filepath"])
        wav = wav.mean(dim=0, keepdim=True)
        speed = random.choice((0.9, 1.0, 1.1))  # ok: MLS301
        target_sr = int(self.sample_rate / speed)
        if sr != target_sr:
            wav = torchaudio.functional.resample(wav, sr, target_sr)
        gain = 10 ** (random.uniform(-6.0, 6.0) / 20)  # ok: MLS309
        feats = (self.fbank(wav * gain) + 1e-6).log()
        feats = (feats - feats.mean(dim=-1, keepdim=True)) / (feats.std(dim=-1, keepdim=True) + 1e-5)
        feats = self._spec_augment(feats)
        n = feats.size(-1)
        pad = (-n) % self.chunk_frames
        if pad:
            feats = torch.nn.functional.pad(feats, (0, pad))
        tokens = torch.tensor(self.tokenizer.encode(item["text"].lower()), dtype=torch.long)
        return feats.squeeze(0).transpose(0, 1), n, tokens
