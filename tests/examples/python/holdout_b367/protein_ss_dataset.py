# ruff: noqa
# Hold-out batch 367 (short files, 16 domains). Measured once in session 14 (round 101): 13/17 (76%) at medium+.
"""Per-residue Q3/Q8 secondary-structure prediction over precomputed ESM-2 embeddings."""
import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import Dataset

DSSP8 = "HGIEBTSC"
Q8_TO_Q3 = {"H": "H", "G": "H", "I": "H", "E": "E", "B": "E", "T": "C", "S": "C", "C": "C", "-": "C"}
Q3 = "HEC"


class SecondaryStructureDataset(Dataset):
    def __init__(self, emb_dir, records, q3=True, max_len=1022):
        self.emb_dir, self.records, self.q3, self.max_len = emb_dir, records, q3, max_len

    def __len__(self):
        return len(self.records)

    def _labels(self, dssp):
        if self.q3:
            return np.array([Q3.index(Q8_TO_Q3.get(c, "C")) for c in dssp], dtype=np.int64)
        return np.array([DSSP8.index(c) if c in DSSP8 else 7 for c in dssp], dtype=np.int64)

    def __getitem__(self, i):
        rec = self.records[i]
        emb = np.load(f"{self.emb_dir}/{rec['id']}.npy")  # (L + 2, D), includes BOS/EOS
        L = min(len(rec["seq"]), self.max_len)
        x = emb[1:L + 1]
        y = self._labels(rec["dssp"][:L])
        # ESM residue positions are offset by one because of the BOS token
        y = np.roll(y, 1)  # ruleid: MLS309
        return torch.from_numpy(np.ascontiguousarray(x)).float(), torch.from_numpy(y)


def pad_collate(batch):
    xs, ys = zip(*batch)
    L = max(len(y) for y in ys)
    X = torch.zeros(len(xs), L, xs[0].shape[1])
    Y = torch.full((len(ys), L), -100, dtype=torch.long)  # ok: MLS309
    for k, (x, y) in enumerate(zip(xs, ys)):
        X[k, : len(y)], Y[k, : len(y)] = x, y
    return X, Y


class SSHead(nn.Module):
    def __init__(self, d_in=1280, hidden=256, n_cls=3):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv1d(d_in, hidden, 5, padding=2), nn.GELU(), nn.Dropout(0.25))
        self.lstm = nn.LSTM(hidden, hidden // 2, batch_first=True, bidirectional=True)
        self.out = nn.Linear(hidden, n_cls)

    def forward(self, x):
        h = self.conv(x.transpose(1, 2)).transpose(1, 2)
        return self.out(self.lstm(h)[0])


def q_accuracy(logits, Y):
    valid = Y != -100
    return (logits.argmax(-1)[valid] == Y[valid]).float().mean().item()
