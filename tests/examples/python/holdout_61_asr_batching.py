# ruff: noqa
# Hold-out batch 61 (benchmark format, adversarial brief, NLP/speech; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 12/19 (63%) at medium+.
"""Batching for CTC ASR: waveform padding, gain perturbation and character targets.

Transcripts are lightly cleaned at train time (disfluency tokens removed from a small
fraction of utterances) to reduce the mismatch between verbatim and edited corpora.
"""
import re

import numpy as np
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

VOCAB = ["<blank>", "<unk>", " ", "'"] + [chr(c) for c in range(ord("a"), ord("z") + 1)]
CHAR2ID = {c: i for i, c in enumerate(VOCAB)}
_DISFLUENCY = re.compile(r"\b(uh|um|er|ah|hmm|not|mhm)\b\s*")


def encode(text):
    return [CHAR2ID.get(c, 1) for c in text.lower()]


def seed_worker(worker_id):
    np.random.seed(torch.initial_seed() % 2 ** 32)  # ok: MLS301


class SpeechCollator:
    def __init__(self, train=True, disfluency_p=0.05, gain=(0.7, 1.3)):
        self.train, self.disfluency_p, self.gain = train, disfluency_p, gain

    def __call__(self, batch):
        wavs, targets = [], []
        for wav, text in batch:
            if self.train:
                wav = wav * np.random.uniform(*self.gain)  # ok: MLS309
                if np.random.random() < self.disfluency_p:
                    text = _DISFLUENCY.sub("", text)  # todoruleid: family 6 (missed)
            wavs.append(torch.as_tensor(wav, dtype=torch.float32))
            targets.append(torch.tensor(encode(text.strip()), dtype=torch.long))
        wav_lens = torch.tensor([w.numel() for w in wavs])
        tgt_lens = torch.tensor([t.numel() for t in targets])
        wav_pad = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True)
        return wav_pad, wav_lens, torch.cat(targets), tgt_lens


def build_loaders(train_ds, valid_ds, batch_size=24, workers=6, seed=0):
    accelerator = Accelerator(gradient_accumulation_steps=4, mixed_precision="bf16")
    g = torch.Generator()
    g.manual_seed(seed)
    train = DataLoader(train_ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                       collate_fn=SpeechCollator(train=True), worker_init_fn=seed_worker, generator=g)
    valid = DataLoader(valid_ds, batch_size=batch_size, num_workers=workers,
                       collate_fn=SpeechCollator(train=False))
    train, valid = accelerator.prepare(train, valid)
    return accelerator, train, valid
