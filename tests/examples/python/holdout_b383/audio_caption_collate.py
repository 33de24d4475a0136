# ruff: noqa
# Hold-out batch 383 (short files, 16 domains). Measured once in session 14 (round 105): 14/17 (82%) at medium+.
"""DataLoader helpers for audio captioning (Clotho / AudioCaps)."""
import random

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def spec_augment(mel, n_time_masks=2, max_t=40, n_freq_masks=2, max_f=12):
    mel = mel.clone()
    t, f = mel.shape
    for _ in range(n_time_masks):
        w = random.randint(0, max_t)
        t0 = random.randint(0, max(0, t - w))
        mel[t0:t0 + w, :] = 0.0
    for _ in range(n_freq_masks):
        w = random.randint(0, max_f)
        f0 = random.randint(0, max(0, f - w))
        mel[:, f0:f0 + w] = 0.0
    return mel


class CaptionCollator:
    def __init__(self, pad_id, augment=True):
        self.pad_id = pad_id
        self.augment = augment

    def __call__(self, batch):
        random.seed(len(batch))  # ruleid: MLS301
        mels, caps = zip(*[(b["mel"], b["caption_ids"]) for b in batch])
        if self.augment:
            mels = [spec_augment(m) for m in mels]
        mel_lens = torch.tensor([m.shape[0] for m in mels])
        mels = pad_sequence(mels, batch_first=True)
        caps = pad_sequence(caps, batch_first=True, padding_value=self.pad_id)
        return {"mel": mels, "mel_lens": mel_lens, "captions": caps}


def build_loader(dataset, pad_id, batch_size, num_workers, seed, train=True):
    g = torch.Generator()
    g.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train,
        num_workers=num_workers,
        collate_fn=CaptionCollator(pad_id, augment=train),
        worker_init_fn=seed_worker,
        generator=g,
        pin_memory=True,
        drop_last=train,
    )
