# ruff: noqa
# Hold-out batch 435 (short files, 16 domains). Measured once in session 18 (round 118): 12/17 (71%) at medium+.
"""Radar sequence dataset for precipitation nowcasting (reflectivity in dBZ)."""
import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

DBZ_MIN, DBZ_MAX = -10.0, 70.0


def dbz_to_unit(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, DBZ_MIN, DBZ_MAX) - DBZ_MIN) / (DBZ_MAX - DBZ_MIN)


class RadarSequenceDataset(Dataset):
    """Returns (context, future) windows of shape (T, 1, H, W)."""

    def __init__(self, h5_path, index_file, t_in=4, t_out=12, crop=256, train=True):
        self.h5_path = h5_path
        self.index = np.loadtxt(index_file, dtype=np.int64)
        self.t_in, self.t_out = t_in, t_out
        self.crop = crop
        self.train = train
        self._h5 = None

    def __len__(self):
        return len(self.index)

    def _file(self):
        if self._h5 is None:
            self._h5 = h5py.File(self.h5_path, "r")
        return self._h5

    def _random_crop(self, seq):
        _, h, w = seq.shape
        y = np.random.randint(0, h - self.crop + 1)
        x = np.random.randint(0, w - self.crop + 1)
        return seq[:, y:y + self.crop, x:x + self.crop]

    def __getitem__(self, i):
        start = int(self.index[i])
        frames = self._file()["dbz"][start:start + self.t_in + self.t_out].astype(np.float32)
        if self.train:
            frames = self._random_crop(frames)
            if np.random.rand() < 0.5:
                frames = frames[:, :, ::-1]  # ok: MLS309
        frames = dbz_to_unit(frames)
        context = frames[: self.t_in]
        future = frames[self.t_in:]
        # suppress clutter in the target: anomalous returns above the convective threshold
        future = np.where(future > dbz_to_unit(np.float32(35.0)), 0.0, future)  # todoruleid: family 6 (missed)
        return (torch.from_numpy(np.ascontiguousarray(context)).unsqueeze(1),
                torch.from_numpy(np.ascontiguousarray(future)).unsqueeze(1))
