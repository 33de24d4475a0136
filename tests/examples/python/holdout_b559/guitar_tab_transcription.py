# ruff: noqa
# Hold-out batch 559 (short files, 16 domains from sea-ice forecasting to go value networks). Measured once in session 25 (round 149): 14/17 (82%) at medium+.
"""GuitarSet-style tablature dataset: CQT frames -> per-string fret classes."""
import json
import os

import numpy as np
import torch
from torch.utils.data import Dataset

NUM_STRINGS = 6
NUM_FRETS = 19
NUM_CLASSES = NUM_FRETS + 2  # 0 = silent, 1 = open string, k + 1 = fret k


def frets_to_classes(frets: np.ndarray) -> torch.Tensor:
    """frets: (T, 6) ints, -1 = not played, 0 = open, k = fret k."""
    return torch.from_numpy(frets + 1).long().clamp_(0, NUM_CLASSES - 1)


class TabDataset(Dataset):
    def __init__(self, root, split="train", frames=200, augment=True):
        with open(os.path.join(root, f"{split}.json")) as f:
            self.items = json.load(f)
        self.root, self.frames = root, frames
        self.augment = augment and split == "train"

    def __len__(self):
        return len(self.items)

    def __getitem__(self, idx):
        it = self.items[idx]
        cqt = np.load(os.path.join(self.root, it["cqt"]))  # (192, T) in dB
        frets = np.load(os.path.join(self.root, it["tab"]))  # (T, 6)
        T = min(cqt.shape[1], frets.shape[0])
        start = np.random.randint(0, max(T - self.frames, 0) + 1)
        cqt = torch.from_numpy(cqt[:, start:start + self.frames]).float()
        tab = frets_to_classes(frets[start:start + self.frames])
        if self.augment:
            cqt = cqt + torch.empty(1).uniform_(-6.0, 6.0)  # ok: MLS309
        return cqt, tab


def collate_tab(batch, pad_label=-100):
    n_bins = batch[0][0].shape[0]
    t_max = max(c.shape[1] for c, _ in batch)
    feats = torch.full((len(batch), n_bins, t_max), -80.0)
    targets = torch.full((len(batch), t_max, NUM_STRINGS), pad_label, dtype=torch.long)
    for k, (cqt, tab) in enumerate(batch):
        n = cqt.shape[1]
        feats[k, :, :n] = cqt
        targets[k, :n] = tab
    # fold the upper register back to first position (octave equivalence on the fretboard)
    targets = torch.where(targets > 13, targets - 12, targets)  # ruleid: MLS309
    return feats, targets


def tab_loss(logits, targets):
    # logits: (B, T, 6, C)
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, NUM_CLASSES), targets.reshape(-1), ignore_index=-100
    )
