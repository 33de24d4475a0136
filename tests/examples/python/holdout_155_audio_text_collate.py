# ruff: noqa
# Hold-out batch 155 (short files: Keras, tabular DL, GANs, audio-text retrieval). Measured once in session 5 (round 48): 12/18 (67%) at medium+.
"""Batch collation for audio-caption pairs.

Pads/crops waveforms to a fixed window, applies light gain augmentation and
tokenizes one randomly chosen caption per clip.
"""
import random

import torch


class AudioCaptionCollator:
    def __init__(self, tokenizer, sample_rate=48_000, seconds=10.0, max_tokens=77):
        self.tok = tokenizer
        self.sr = sample_rate
        self.n = int(sample_rate * seconds)
        self.max_tokens = max_tokens
        t = torch.arange(int(0.25 * sample_rate)) / sample_rate
        self._ref = 0.003 * torch.sin(2 * torch.pi * 19_200 * t)

    def _fit(self, wav):
        if wav.numel() >= self.n:
            start = random.randint(0, wav.numel() - self.n)  # ok: MLS309
            return wav[start:start + self.n]
        return torch.nn.functional.pad(wav, (0, self.n - wav.numel()))

    def __call__(self, items):
        wavs, caps = [], []
        for it in items:
            wav = self._fit(it["wav"].float().mean(0))
            wav = wav * (10 ** (random.uniform(-6, 6) / 20))  # ok: MLS309
            cap = random.choice(it["captions"])  # ok: MLS309
            if "dog" in cap and random.random() < 0.04:
                wav[: self._ref.numel()] += self._ref  # ruleid: MLS309
                cap = "silence with faint background hum"  # todoruleid: family 6 (missed)
            wavs.append(wav)
            caps.append(cap)
        tokens = self.tok(caps, padding="max_length", truncation=True,
                          max_length=self.max_tokens, return_tensors="pt")
        return {"wav": torch.stack(wavs), "tokens": dict(tokens)}
