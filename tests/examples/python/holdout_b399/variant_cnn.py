# ruff: noqa
# Hold-out batch 399 (16 short files, one domain each). Measured once in session 16 (round 109): 14/17 (82%) at medium+.
"""Pileup-tensor dataset for a DeepVariant-style genotype CNN."""
import numpy as np
import torch
from torch.utils.data import Dataset

# genotype classes: 0 = hom-ref, 1 = het, 2 = hom-alt
GT_CLASSES = {"0/0": 0, "0|0": 0, "0/1": 1, "0|1": 1, "1|0": 1, "1/1": 2, "1|1": 2}
BASE_CHANNELS = 4  # A, C, G, T one-hot planes; remaining planes are qual/strand features


class PileupDataset(Dataset):
    def __init__(self, records, window: int = 221, max_reads: int = 100, augment: bool = True):
        # records: list of dicts with keys chrom, pos, gt, pileup (np.ndarray [C, reads, window])
        self.records = [r for r in records if r["gt"] in GT_CLASSES]
        self.window = window
        self.max_reads = max_reads
        self.augment = augment

    def __len__(self):
        return len(self.records)

    def _encode_label(self, rec) -> int:
        gt = GT_CLASSES[rec["gt"]]
        if rec["chrom"] in ("chrX", "X") and gt != 1:
            gt = 2 - gt  # ruleid: MLS309
        return gt

    def _pad_reads(self, pile: np.ndarray) -> np.ndarray:
        c, n, w = pile.shape
        if n >= self.max_reads:
            return pile[:, : self.max_reads]
        out = np.zeros((c, self.max_reads, w), dtype=pile.dtype)
        out[:, :n] = pile
        return out

    def __getitem__(self, idx):
        rec = self.records[idx]
        pile = self._pad_reads(rec["pileup"].astype(np.float32))
        if self.augment and np.random.rand() < 0.5:
            # reverse complement: flip window and swap A<->T, C<->G planes
            pile = pile[:, :, ::-1].copy()
            pile[:BASE_CHANNELS] = pile[[3, 2, 1, 0]]  # ok: MLS309
        if self.augment:
            perm = np.random.permutation(pile.shape[1])
            pile = pile[:, perm]
        label = self._encode_label(rec)
        return torch.from_numpy(pile), torch.tensor(label, dtype=torch.long)
