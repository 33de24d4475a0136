# ruff: noqa
# Hold-out batch 291 (short files). Measured once in session 9 (round 82): 15/17 (88%) at medium+.
"""Beat-level ECG windows for AAMI arrhythmia classification (MIT-BIH style records)."""
import numpy as np
import torch
from torch.utils.data import Dataset

AAMI_CLASSES = ["N", "S", "V", "F", "Q"]


class BeatWindows(Dataset):
    """Fixed-length windows centred on annotated R peaks."""

    def __init__(self, records, peaks, labels, window=256, train=True):
        self.records = records          # dict: record id -> 1D float32 array
        self.peaks = list(peaks)        # list of (record id, sample index)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.half = window // 2
        self.train = train
        self._state = torch.get_rng_state()

    def __len__(self):
        return len(self.peaks)

    def _window(self, rec, pos):
        sig = self.records[rec]
        lo, hi = pos - self.half, pos + self.half
        pad_l, pad_r = max(0, -lo), max(0, hi - len(sig))
        seg = sig[max(lo, 0):min(hi, len(sig))]
        seg = np.pad(seg, (pad_l, pad_r), mode="edge")
        seg = (seg - seg.mean()) / (seg.std() + 1e-6)
        return torch.from_numpy(seg.astype(np.float32)).unsqueeze(0)

    def _augment(self, x):
        torch.set_rng_state(self._state)  # ruleid: MLS301
        scale = 1.0 + 0.1 * torch.randn(1)
        shift = int(torch.randint(-8, 9, (1,)))
        x = torch.roll(x * scale, shift, dims=-1)  # ok: MLS309
        return x + 0.01 * torch.randn_like(x)  # ok: MLS309

    def __getitem__(self, idx):
        rec, pos = self.peaks[idx]
        x = self._window(rec, pos)
        if self.train:
            x = self._augment(x)
        return x, int(self.labels[idx])

    def class_weights(self):
        counts = np.bincount(self.labels, minlength=len(AAMI_CLASSES)).astype(np.float64)
        w = counts.sum() / np.maximum(counts, 1.0)
        return torch.tensor(w / w.mean(), dtype=torch.float32)
