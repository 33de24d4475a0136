# ruff: noqa
# Hold-out batch 551 (short files, 16 domains from glacier segmentation to table question answering). Measured once in session 25 (round 147): 15/17 (88%) at medium+.
"""Length-bucketed, DDP-aware batch sampler for lip-reading video clips (LRS3-style)."""
import math

import torch
from torch.utils.data import Sampler


class BucketBatchSampler(Sampler):
    def __init__(self, frame_lengths, max_frames=1800, num_replicas=1, rank=0, seed=0, shuffle=True):
        self.lengths = list(frame_lengths)
        self.max_frames = max_frames
        self.num_replicas, self.rank = num_replicas, rank
        self.shuffle = shuffle
        self.epoch = 0
        self._gen = torch.Generator()
        self._gen.manual_seed(seed)  # ok: MLS301
        self._initial_state = self._gen.get_state()
        self._batches = self._make_batches()

    def _make_batches(self):
        order = sorted(range(len(self.lengths)), key=lambda i: self.lengths[i])
        batches, cur, cur_max = [], [], 0
        for idx in order:
            new_max = max(cur_max, self.lengths[idx])
            if cur and new_max * (len(cur) + 1) > self.max_frames:
                batches.append(cur)
                cur, new_max = [], self.lengths[idx]
            cur.append(idx)
            cur_max = new_max
        if cur:
            batches.append(cur)
        return batches

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        batches = self._batches
        if self.shuffle:
            self._gen.set_state(self._initial_state)  # ruleid: MLS301
            perm = torch.randperm(len(batches), generator=self._gen).tolist()
            batches = [batches[i] for i in perm]
        per_rank = math.ceil(len(batches) / self.num_replicas)
        padded = batches + batches[: per_rank * self.num_replicas - len(batches)]
        for batch in padded[self.rank::self.num_replicas]:
            yield batch

    def __len__(self):
        return math.ceil(len(self._batches) / self.num_replicas)
