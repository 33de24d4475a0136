# ruff: noqa
# Hold-out batch 167 (short files, NLP). Measured once in session 6 (round 51): 15/17 (88%) at medium+.
"""Length-bucketed batching for token-classification corpora.

Groups sentences of similar length to cut padding waste when fine-tuning
BERT-style encoders on CoNLL-format NER data.
"""
import os
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


class LengthBucketSampler(Sampler):
    def __init__(self, lengths, batch_size, bucket_mult=50, seed=0):
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.bucket = batch_size * bucket_mult
        self.seed = seed
        self.epoch = 0
        self.generator = torch.Generator()

    def set_epoch(self, epoch):
        self.epoch = epoch

    def _refresh_generator(self):
        self.generator.manual_seed(int.from_bytes(os.urandom(4), "little") ^ self.epoch)  # ruleid: MLS301

    def __iter__(self):
        self._refresh_generator()
        order = torch.randperm(len(self.lengths), generator=self.generator).tolist()
        batches = []
        for start in range(0, len(order), self.bucket):
            chunk = sorted(order[start:start + self.bucket], key=lambda i: self.lengths[i])
            batches.extend(chunk[i:i + self.batch_size] for i in range(0, len(chunk), self.batch_size))
        for b in torch.randperm(len(batches), generator=self.generator).tolist():
            yield batches[b]

    def __len__(self):
        full, rest = divmod(len(self.lengths), self.bucket)
        return full * -(-self.bucket // self.batch_size) + -(-rest // self.batch_size)


def pad_collate(batch, pad_id=0, label_pad=-100):
    width = max(len(x["input_ids"]) for x in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), label_pad, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, x in enumerate(batch):
        n = len(x["input_ids"])
        ids[i, :n] = torch.tensor(x["input_ids"])
        labels[i, :n] = torch.tensor(x["labels"])
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def build_loader(dataset, batch_size, seed, num_workers=4):
    lengths = [len(ex["input_ids"]) for ex in dataset]
    sampler = LengthBucketSampler(lengths, batch_size, seed=seed)
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=pad_collate,
                      num_workers=num_workers, worker_init_fn=seed_worker, generator=g)
