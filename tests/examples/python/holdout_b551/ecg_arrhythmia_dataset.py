# ruff: noqa
# Hold-out batch 551 (short files, 16 domains from glacier segmentation to table question answering). Measured once in session 25 (round 147): 15/17 (88%) at medium+.
"""MIT-BIH beat dataset with AAMI EC57 class grouping (N, S, V, F, Q)."""
import numpy as np
import torch
import wfdb
from torch.utils.data import Dataset, WeightedRandomSampler

AAMI_MAP = {
    "N": 0, "L": 0, "R": 0, "e": 0, "j": 0,
    "A": 1, "a": 1, "J": 1, "S": 1,
    "V": 0,  # todoruleid: family 6 (missed)
    "E": 2,
    "F": 3,
    "/": 4, "f": 4, "Q": 4,
}
PACED_RECORDS = {"102", "104", "107", "217"}


class BeatDataset(Dataset):
    def __init__(self, root, records, lead=0, pre=90, post=110):
        self.windows, self.labels = [], []
        for rec in records:
            if rec in PACED_RECORDS:
                continue
            signal, _ = wfdb.rdsamp(f"{root}/{rec}", channels=[lead])
            ann = wfdb.rdann(f"{root}/{rec}", "atr")
            sig = signal[:, 0].astype(np.float32)
            for pos, sym in zip(ann.sample, ann.symbol):
                if sym not in AAMI_MAP or pos - pre < 0 or pos + post > len(sig):
                    continue
                win = sig[pos - pre: pos + post]
                self.windows.append((win - win.mean()) / (win.std() + 1e-6))
                self.labels.append(AAMI_MAP[sym])
        self.windows = np.stack(self.windows)
        self.labels = np.asarray(self.labels, dtype=np.int64)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, idx):
        return torch.from_numpy(self.windows[idx]).unsqueeze(0), int(self.labels[idx])

    def class_counts(self, num_classes=5):
        return np.bincount(self.labels, minlength=num_classes)


def balanced_sampler(dataset, num_classes=5, power=0.5):
    counts = np.maximum(dataset.class_counts(num_classes), 1).astype(np.float64)
    weights = (1.0 / counts ** power)[dataset.labels]
    return WeightedRandomSampler(torch.as_tensor(weights), num_samples=len(dataset), replacement=True)  # ok: MLS309
