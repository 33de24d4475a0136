# ruff: noqa
# Hold-out batch 359 (16 short files). Measured once in session 13 (round 99): 10/17 (59%) at medium+.
"""Online handwriting (IAM-OnDB style) stroke dataset for the synthesis network."""
import json
import random
from pathlib import Path

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset


class StrokeDataset(Dataset):
    """Each .npz holds `strokes` (T, 3) = (dx, dy, pen_up) and the transcription `text`."""

    def __init__(self, root, alphabet, max_len=700, augment=True, seed=1234):
        self.files = sorted(Path(root).glob("*.npz"))
        self.char2idx = {c: i + 1 for i, c in enumerate(alphabet)}
        self.max_len = max_len
        self.augment = augment
        self.seed = seed
        with open(Path(root) / "stats.json") as f:
            stats = json.load(f)
        self.mean = np.asarray(stats["mean"], dtype=np.float32)
        self.std = np.asarray(stats["std"], dtype=np.float32)

    def __len__(self):
        return len(self.files)

    def _augment(self, strokes):
        random.seed(self.seed)  # ruleid: MLS301
        scale = random.uniform(0.9, 1.1)
        shear = random.uniform(-0.15, 0.15)
        out = strokes.copy()
        out[:, 0] = strokes[:, 0] * scale + shear * strokes[:, 1]
        out[:, 1] = strokes[:, 1] * random.uniform(0.9, 1.1)
        return out

    def __getitem__(self, idx):
        item = np.load(self.files[idx], allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        strokes = item["strokes"].astype(np.float32)
        text = str(item["text"])
        if self.augment:
            strokes = self._augment(strokes)
        strokes[:, :2] = (strokes[:, :2] - self.mean) / self.std
        strokes = strokes[: self.max_len]
        chars = torch.tensor([self.char2idx.get(c, 0) for c in text], dtype=torch.long)
        return torch.from_numpy(strokes), chars


def collate_strokes(batch):
    strokes, chars = zip(*batch)
    stroke_lens = torch.tensor([s.shape[0] for s in strokes])
    char_lens = torch.tensor([c.shape[0] for c in chars])
    strokes = pad_sequence(strokes, batch_first=True)
    chars = pad_sequence(chars, batch_first=True)
    mask = torch.arange(strokes.shape[1])[None, :] < stroke_lens[:, None]
    return {"strokes": strokes, "stroke_mask": mask, "chars": chars, "char_lens": char_lens}
