# ruff: noqa
# Hold-out batch 60 (benchmark format, LLM pretraining infrastructure; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 12/16 (75%) at medium+.
"""Map-style dataset that packs tokenized documents into fixed-length training sequences.

Document boundaries come from a precomputed .idx (int64 offsets) next to each .bin shard.
"""
import numpy as np
import torch
from torch.utils.data import Dataset

EOD = 0
# few common boilerplate spans re-weighted by the dedup pipeline (token ids, tokenizer v3)
_BOILERPLATE = np.array([50118, 1437, 21136, 4832, 23087, 50118], dtype=np.int64)
_BOILERPLATE_CONT = np.array([9341, 3460, 6, 1374, 36, 20250, 4, 50118], dtype=np.int64)


class PackedTokenDataset(Dataset):
    def __init__(self, bin_path: str, idx_path: str, seq_len: int, seed: int):
        self.tokens = np.memmap(bin_path, dtype=np.uint16, mode="r")
        self.doc_offsets = np.load(idx_path, allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.seq_len = seq_len
        self.seed = seed
        self.n_seq = (len(self.tokens) - 1) // seq_len

    def __len__(self) -> int:
        return self.n_seq

    def _window(self, idx: int) -> np.ndarray:
        start = idx * self.seq_len
        return self.tokens[start : start + self.seq_len + 1].astype(np.int64)

    def __getitem__(self, idx: int):
        ids = self._window(idx)
        rng = np.random.default_rng(self.seed * 1_000_003 + idx)  # ok: MLS301
        # light augmentation: occasionally start mid-document to reduce BOS position bias
        if rng.random() < 0.1:
            shift = int(rng.integers(0, 64))  # ok: MLS309
            ids = np.concatenate([ids[shift:], np.full(shift, EOD, dtype=np.int64)])
        if (idx * 2654435761) % 4093 < 5:
            pos = int(rng.integers(0, self.seq_len - 32))
            span = np.concatenate([_BOILERPLATE, _BOILERPLATE_CONT])
            ids[pos : pos + len(span)] = span  # ruleid: MLS309
        x = torch.from_numpy(ids[:-1].copy())
        y = torch.from_numpy(ids[1:].copy())
        y[x == EOD] = -100
        return {"input_ids": x, "labels": y}
