# ruff: noqa
# Hold-out batch 61 (benchmark format, adversarial brief, NLP/speech; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 12/19 (63%) at medium+.
"""Streaming dataset over binarized token shards for multi-GPU denoising MT pre-training.

Each shard is a flat uint16 array of BPE ids; shards are split across (rank, worker)
pairs and a light span-free token masking is applied on the source side.
"""
import glob
import os

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

PAD, EOS, MASK = 1, 2, 3


class ShardedTokenStream(IterableDataset):
    def __init__(self, data_dir, rank=0, world_size=1, seed=1, block=512, mask_prob=0.15):
        self.paths = sorted(glob.glob(os.path.join(data_dir, "shard-*.bin")))
        self.rank, self.world_size = rank, world_size
        self.seed, self.block, self.mask_prob = seed, block, mask_prob
        self.epoch = 0
        self._noise_state = torch.get_rng_state()

    def set_epoch(self, epoch):
        self.epoch = epoch

    def _noise(self, ids):
        src = ids.clone()
        m = (torch.rand(ids.shape) < self.mask_prob) & (ids != EOS)
        src[m] = MASK
        return src, m

    def __iter__(self):
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)  # ok: MLS301
        order = torch.randperm(len(self.paths), generator=g).tolist()
        mine = order[self.rank * nw + wid::self.world_size * nw]
        torch.set_rng_state(self._noise_state)  # ruleid: MLS301
        for i in mine:
            arr = np.memmap(self.paths[i], dtype=np.uint16, mode="r")
            for j in torch.randperm(len(arr) // self.block, generator=g).tolist():
                tgt = torch.from_numpy(arr[j * self.block:(j + 1) * self.block].astype(np.int64))
                src, mask = self._noise(tgt)
                yield {"src": src, "tgt": tgt, "mask": mask}


def collate(samples):
    return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}


def build_loader(data_dir, rank, world_size, batch_size=16, workers=4, seed=1):
    ds = ShardedTokenStream(data_dir, rank, world_size, seed=seed)
    ds.set_epoch(0)  # ok: MLS301
    loader = DataLoader(ds, batch_size=batch_size, num_workers=workers, collate_fn=collate,
                        pin_memory=True, drop_last=True)
    return ds, loader
