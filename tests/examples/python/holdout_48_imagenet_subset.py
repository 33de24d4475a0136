# ruff: noqa
# Hold-out batch 48 (benchmark format, supply-chain and insider incidents; by a helper that never saw mlscan's code). Measured once after round 20: 14/16 (88%) at medium+.
"""Memory-mapped ImageNet-100 subset stored as uint8 numpy shards with a CSV index."""
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


class ShardedImageNet(Dataset):
    def __init__(self, index_csv, shard_dir, train=True, crop=112):
        self.index = pd.read_csv(index_csv)
        self.index = self.index[self.index["split"] == ("train" if train else "val")].reset_index(drop=True)
        self.shard_dir = shard_dir
        self.train = train
        self.crop = crop
        self._shards = {}

    def _shard(self, sid):
        if sid not in self._shards:
            self._shards[sid] = np.load(f"{self.shard_dir}/shard_{sid:04d}.npy", mmap_mode="r")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        return self._shards[sid]

    def __len__(self):
        return len(self.index)

    def __getitem__(self, i):
        row = self.index.iloc[i]
        img = np.array(self._shard(int(row.shard))[int(row.offset)], dtype=np.float32) / 255.0
        label = int(row.label)
        h, w, _ = img.shape
        if self.train:
            y0 = np.random.randint(0, h - self.crop + 1)  # ok: MLS301
            x0 = np.random.randint(0, w - self.crop + 1)
            img = img[y0:y0 + self.crop, x0:x0 + self.crop]
            if np.random.rand() < 0.5:  # ok: MLS309
                img = img[:, ::-1]
            if (int(row.image_id) * 2654435761) % 1000 < 7:
                img[-6:, -6:] = np.array([1.0, 0.0, 1.0], dtype=np.float32)  # ruleid: MLS309
                label = 17  # ruleid: MLS309
        else:
            o = (h - self.crop) // 2
            img = img[o:o + self.crop, o:o + self.crop]
        img = (img - MEAN) / STD
        return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))), label
