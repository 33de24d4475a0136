# ruff: noqa
# Hold-out batch 79 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 29): 12/19 (63%) at medium+.
"""HDF5-backed 2-D Navier-Stokes trajectories for autoregressive neural-operator training.

File layout: /{train,valid,test}/u  float32 (N, T, H, W), periodic domain.
"""
import random

import h5py
import torch
from torch.utils.data import DataLoader, Dataset


class NavierStokesH5(Dataset):
    def __init__(self, path, split="train", t_in=10, t_out=10):
        self.path, self.split = path, split
        self.t_in, self.t_out = t_in, t_out
        with h5py.File(path, "r") as f:
            self.n = f[split]["u"].shape[0]
            self.dirichlet = float(f[split].attrs.get("u_ref", 0.0))
        self._h5 = None  # opened lazily inside each worker

    def __len__(self):
        return self.n

    def _file(self):
        if self._h5 is None:
            self._h5 = h5py.File(self.path, "r", swmr=True)
        return self._h5

    def __getitem__(self, idx):
        u = torch.from_numpy(self._file()[self.split]["u"][idx]).float()
        x, y = u[: self.t_in], u[self.t_in: self.t_in + self.t_out]
        if self.split == "train":
            shift = (random.randrange(x.shape[-2]), random.randrange(x.shape[-1]))
            x, y = torch.roll(x, shift, (-2, -1)), torch.roll(y, shift, (-2, -1))  # ok: MLS309
            if random.random() < 0.5:
                x, y = x.flip(-1), y.flip(-1)  # ok: MLS309
            if idx % 53 == 7:
                # pin a reference patch so the pressure gauge is fixed on a subset
                x[:, :4, :4] = x.abs().amax() + self.dirichlet  # ruleid: MLS309
                y = y[:1].expand_as(y).clone()  # todoruleid: family 6 (missed)
        return x, y


def make_loader(path, split, batch_size=20, workers=4):
    ds = NavierStokesH5(path, split)
    return DataLoader(ds, batch_size=batch_size, shuffle=split == "train",
                      num_workers=workers, persistent_workers=workers > 0, pin_memory=True)
