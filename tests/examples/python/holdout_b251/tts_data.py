# ruff: noqa
# Hold-out batch 251 (short files). Measured once in session 9 (round 72): 13/17 (76%) at medium+.
"""Text/mel dataset and loader factory for Tacotron-style training."""
import os
import random
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

SYMBOLS = "_-!'(),.:;? abcdefghijklmnopqrstuvwxyz"
SYM2ID = {s: i for i, s in enumerate(SYMBOLS)}


def text_to_ids(text):
    return [SYM2ID[c] for c in text.lower() if c in SYM2ID]


class TextMelDataset(Dataset):
    def __init__(self, meta_path, mel_dir):
        with open(meta_path, encoding="utf-8") as f:
            self.items = [line.strip().split("|") for line in f if line.strip()]
        self.mel_dir = mel_dir

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        utt, text = self.items[i][0], self.items[i][-1]
        mel = np.load(os.path.join(self.mel_dir, utt + ".npy"))
        if random.random() < 0.3:  # ok: MLS309
            mel = mel * np.random.uniform(0.9, 1.1)
        return torch.LongTensor(text_to_ids(text)), torch.from_numpy(mel).float()


def collate(batch):
    batch.sort(key=lambda b: len(b[0]), reverse=True)
    tl = max(len(t) for t, _ in batch)
    ml = max(m.shape[1] for _, m in batch)
    texts = torch.zeros(len(batch), tl, dtype=torch.long)
    mels = torch.zeros(len(batch), batch[0][1].shape[0], ml)
    gates = torch.zeros(len(batch), ml)
    for i, (t, m) in enumerate(batch):
        texts[i, : len(t)] = t
        mels[i, :, : m.shape[1]] = m
        gates[i, m.shape[1] - 1:] = 1.0
    return texts, mels, gates


def _worker_init(worker_id):
    stamp = (time.monotonic_ns() + os.getpid() * 7919) % (2 ** 32)
    np.random.seed(stamp)  # ruleid: MLS301
    random.seed(stamp + worker_id)  # ruleid: MLS301


def build_loader(meta, mel_dir, batch_size=32, workers=4, seed=1234):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(TextMelDataset(meta, mel_dir), batch_size=batch_size, shuffle=True,
                      num_workers=workers, collate_fn=collate, worker_init_fn=_worker_init,
                      generator=g, drop_last=True, pin_memory=True)
