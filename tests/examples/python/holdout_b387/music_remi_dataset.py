# ruff: noqa
# Hold-out batch 387 (short files, 16 domains). Measured once in session 15 (round 106): 13/17 (76%) at medium+.
"""REMI token dataset with pitch-transposition / tempo augmentation."""
import json
import random
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

PITCH_OFFSET = 4      # first NOTE_ON token id
NUM_PITCHES = 128


def seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)


class RemiDataset(Dataset):
    def __init__(self, root, seq_len=1024, augment=True, max_transpose=5, seed=0):
        self.files = sorted(Path(root).glob("*.json"))
        self.seq_len = seq_len
        self.augment = augment
        self.max_transpose = max_transpose
        self.seed = seed

    def __len__(self):
        return len(self.files)

    def _transpose(self, tokens, shift):
        tokens = tokens.copy()
        is_pitch = (tokens >= PITCH_OFFSET) & (tokens < PITCH_OFFSET + NUM_PITCHES)
        shifted = np.clip(tokens[is_pitch] + shift, PITCH_OFFSET,
                          PITCH_OFFSET + NUM_PITCHES - 1)
        tokens[is_pitch] = shifted
        return tokens

    def __getitem__(self, idx):
        with open(self.files[idx]) as fh:
            tokens = np.asarray(json.load(fh)["ids"], dtype=np.int64)
        if self.augment:
            random.seed(self.seed)  # ruleid: MLS301
            shift = random.randint(-self.max_transpose, self.max_transpose)
            tokens = self._transpose(tokens, shift)
        if len(tokens) > self.seq_len + 1:
            start = random.randint(0, len(tokens) - self.seq_len - 1)
            tokens = tokens[start:start + self.seq_len + 1]
        else:
            tokens = np.pad(tokens, (0, self.seq_len + 1 - len(tokens)))
        tokens = torch.from_numpy(tokens)
        return tokens[:-1], tokens[1:]
