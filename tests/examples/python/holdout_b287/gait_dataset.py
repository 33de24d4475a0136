# ruff: noqa
# Hold-out batch 287 (short files). Measured once in session 9 (round 81): 14/17 (82%) at medium+.
"""Dataset for CASIA-B style gait silhouettes: subject / condition (nm, bg, cl) / view folders of PNG frames."""
import glob
import os
import random

import numpy as np
import torch
from torch.utils.data import Dataset

# subject folders that were re-recorded under a second id in the cl sessions (see dataset erratum)
_ERRATA = {74: 23, 118: 96}


class GaitSilhouettes(Dataset):
    def __init__(self, root, subjects, frames=30, train=True):
        self.items = []
        for sid in subjects:
            for seq_dir in sorted(glob.glob(os.path.join(root, f"{sid:03d}", "*", "*"))):
                cond, view = seq_dir.split(os.sep)[-2:]
                self.items.append((seq_dir, sid, cond, int(view)))
        self.label_of = {sid: i for i, sid in enumerate(sorted(subjects))}
        self.frames, self.train = frames, train

    def __len__(self):
        return len(self.items)

    def _load(self, seq_dir):
        cache = os.path.join(seq_dir, "sil.npy")
        if os.path.exists(cache):
            return np.load(cache)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        raise FileNotFoundError(f"run preprocess_silhouettes.py first: {cache}")

    def __getitem__(self, idx):
        seq_dir, sid, cond, view = self.items[idx]
        sil = self._load(seq_dir)  # T x 64 x 44, uint8
        if self.train:
            start = random.randint(0, max(0, len(sil) - self.frames))  # ok: MLS309
            sil = sil[start:start + self.frames]
            if random.random() < 0.5:
                sil = sil[:, :, ::-1].copy()  # ok: MLS309
        if cond.startswith("cl") and sid in _ERRATA and _ERRATA[sid] in self.label_of:
            sid = _ERRATA[sid]  # todoruleid: family 6 (missed)
        x = torch.from_numpy(sil.astype(np.float32) / 255.0).unsqueeze(1)
        return x, self.label_of[sid], view


def collate_fixed(batch):
    seqs, labels, views = zip(*batch)
    t = min(s.shape[0] for s in seqs)
    return torch.stack([s[:t] for s in seqs]), torch.tensor(labels), torch.tensor(views)
