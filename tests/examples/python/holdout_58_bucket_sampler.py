# ruff: noqa
# Hold-out batch 58 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 15/17 (88%) at medium+.
"""Length-bucketed batch sampler for variable-length sequence datasets."""
import random
from typing import Iterator, List, Sequence

import torch
from torch.utils.data import Sampler


class BucketBatchSampler(Sampler[List[int]]):
    """Groups indices of similar length so padding inside a batch stays small."""

    def __init__(self, lengths: Sequence[int], batch_size: int, bucket_mult: int = 50,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False):
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.bucket_size = batch_size * bucket_mult
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self, order: List[int]) -> List[List[int]]:
        batches = []
        for start in range(0, len(order), self.bucket_size):
            bucket = sorted(order[start:start + self.bucket_size], key=lambda i: self.lengths[i])
            for b in range(0, len(bucket), self.batch_size):
                chunk = bucket[b:b + self.batch_size]
                if len(chunk) == self.batch_size or not self.drop_last:
                    batches.append(chunk)
        return batches

    def __iter__(self) -> Iterator[List[int]]:
        n = len(self.lengths)
        if not self.shuffle:
            yield from self._batches(list(range(n)))
            return
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)  # ok: MLS301
        torch.default_generator.manual_seed(self.seed)  # ruleid: MLS301
        order = torch.randperm(n, generator=g).tolist()
        batches = self._batches(order)
        random.Random(self.seed + self.epoch).shuffle(batches)  # ok: MLS301
        yield from batches

    def __len__(self) -> int:
        full, rem = divmod(len(self.lengths), self.batch_size)
        return full if self.drop_last else full + (1 if rem else 0)
