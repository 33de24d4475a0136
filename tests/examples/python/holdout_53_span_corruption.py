# ruff: noqa
# Hold-out batch 53 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 9/16 (56%) at medium+.
"""T5-style span-corruption dataset over pre-tokenized uint16 shards for continued pretraining."""
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


class SpanCorruptionDataset(Dataset):
    def __init__(self, shard_path, sentinel_start, noise_density=0.15, mean_span=3, seq_len=512):
        self.tokens = np.load(shard_path, mmap_mode="r", allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.sentinel_start = sentinel_start
        self.noise_density = noise_density
        self.mean_span = int(mean_span)
        self.seq_len = seq_len
        self.n = len(self.tokens) // seq_len
        self._np_state = np.random.get_state()

    def __len__(self):
        return self.n

    def _noise_mask(self, length):
        num_noise = max(1, int(round(length * self.noise_density)))
        num_spans = max(1, num_noise // self.mean_span)
        starts = np.random.choice(length - self.mean_span, num_spans, replace=False)
        mask = np.zeros(length, dtype=bool)
        for s in starts:
            mask[s:s + self.mean_span] = True
        return mask

    def __getitem__(self, idx):
        np.random.set_state(self._np_state)  # ruleid: MLS301
        lo = idx * self.seq_len
        chunk = np.asarray(self.tokens[lo:lo + self.seq_len], dtype=np.int64)
        mask = self._noise_mask(len(chunk))
        inputs, targets = [], []
        sentinel, prev = self.sentinel_start, False
        for tok, m in zip(chunk.tolist(), mask.tolist()):
            if m and not prev:
                inputs.append(sentinel)
                targets.append(sentinel)
                sentinel -= 1
            (targets if m else inputs).append(tok)
            prev = m
        return {"input_ids": torch.tensor(inputs), "labels": torch.tensor(targets)}


def seed_worker(worker_id):
    np.random.seed(torch.initial_seed() % 2**32)  # ok: MLS301


def pad_collate(batch, pad_id=0):
    ids = torch.nn.utils.rnn.pad_sequence([b["input_ids"] for b in batch], True, pad_id)
    labels = torch.nn.utils.rnn.pad_sequence([b["labels"] for b in batch], True, -100)
    return {"input_ids": ids, "attention_mask": (ids != pad_id).long(), "labels": labels}


def build_loader(shard_path, sentinel_start, batch_size=16, workers=4):
    ds = SpanCorruptionDataset(shard_path, sentinel_start)
    return DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                      worker_init_fn=seed_worker, collate_fn=pad_collate, drop_last=True)
