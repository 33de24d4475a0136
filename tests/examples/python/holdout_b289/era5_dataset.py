# ruff: noqa
# Hold-out batch 289 (textbook, weather emulation). Measured once in session 9 (round 82): 27/30 (90%) at medium+.
"""ERA5-style reanalysis dataset for autoregressive weather emulation.

The store (zarr or netCDF) is expected to hold one variable per physical field,
each with dimensions ``(time, lat, lon)``.  A training sample consists of

    x : the normalised atmospheric state at time t            -> (C, H, W)
    y : the normalised states at t + k * lead, k = 1..n_steps -> (K, C, H, W)

Normalisation statistics (per-channel mean and standard deviation, optionally a
daily climatology used for the anomaly correlation coefficient) are computed
once offline and loaded from disk by :class:`NormStats`.
"""
from __future__ import annotations

import os
import pickle
import random
import time
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

try:  # xarray is only needed when actually reading a store
    import xarray as xr
except ImportError:  # pragma: no cover - optional dependency
    xr = None


# --------------------------------------------------------------------------- #
# Normalisation statistics
# --------------------------------------------------------------------------- #
@dataclass
class NormStats:
    """Per-channel statistics used to standardise every field."""

    mean: np.ndarray                      # shape (C,)
    std: np.ndarray                       # shape (C,)
    climatology: Optional[np.ndarray] = None  # shape (366, C, H, W), optional

    @classmethod
    def from_file(cls, path: str) -> "NormStats":
        """Load statistics written by ``scripts/compute_stats.py``.

        Three formats are supported for historical reasons: ``.safetensors``
        (preferred), ``.npz`` and the legacy pickled dictionary.
        """
        if path.endswith(".safetensors"):
            from safetensors.numpy import load_file
            blob = load_file(path)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
            return cls(blob["mean"], blob["std"], blob.get("clim"))
        if path.endswith(".npz"):
            blob = np.load(path, allow_pickle=True)  # ruleid: MLS104
            clim = blob["clim"] if "clim" in blob.files else None
            return cls(blob["mean"], blob["std"], clim)
        with open(path, "rb") as fh:
            blob = pickle.load(fh)  # ruleid: MLS103
        return cls(np.asarray(blob["mean"]), np.asarray(blob["std"]), blob.get("clim"))

    def reshape(self):
        """Return mean/std broadcastable against a (C, H, W) array."""
        return self.mean[:, None, None], self.std[:, None, None]


# --------------------------------------------------------------------------- #
# Dataset
# --------------------------------------------------------------------------- #
class ERA5Dataset(Dataset):
    """Multi-step forecasting samples drawn from an ERA5-like store.

    Args:
        path: path to a ``.zarr`` directory or a ``.nc`` file.
        variables: ordered list of variable names; defines the channel order.
        stats: normalisation statistics (see :class:`NormStats`).
        n_steps: number of autoregressive targets returned per sample.
        lead_hours: spacing between consecutive targets, in hours.
        data_step_hours: temporal resolution of the store, in hours.
        augment: apply random longitudinal rolls (a symmetry of the sphere).
    """

    def __init__(self, path: str, variables: Sequence[str], stats: NormStats,
                 n_steps: int = 1, lead_hours: int = 6, data_step_hours: int = 1,
                 augment: bool = False):
        self.path = path
        self.variables = list(variables)
        self.stats = stats
        self.n_steps = n_steps
        self.stride = lead_hours // data_step_hours
        self.augment = augment
        self._ds = None  # opened lazily so each DataLoader worker has its own handle

        # Read the time axis once in the main process to size the dataset.
        ds = self._open()
        self.times = ds["time"].values.astype("datetime64[h]").astype(object)
        self.n_lat = ds.sizes["latitude"]
        self.n_lon = ds.sizes["longitude"]
        self._ds = None
        self._mean, self._std = stats.reshape()
        self._t2m = self.variables.index("2m_temperature") if "2m_temperature" in self.variables else 0

    # -- I/O helpers --------------------------------------------------------
    def _open(self):
        if self._ds is None:
            if xr is None:
                raise RuntimeError("xarray is required to read ERA5 stores")
            if self.path.endswith(".zarr"):
                self._ds = xr.open_zarr(self.path, consolidated=True)
            else:
                self._ds = xr.open_dataset(self.path, cache=False)
            # Many workers opening a consolidated zarr at the same moment hammer
            # the metadata server; a small per-process jitter spreads them out.
            random.seed(os.getpid() ^ int(time.time()))  # ruleid: MLS301
            time.sleep(0.05 * random.random())
        return self._ds

    def _load_state(self, t: int) -> np.ndarray:
        """Return the normalised state at time index ``t`` as (C, H, W) float32."""
        ds = self._open()
        fields = [ds[v].isel(time=t).values for v in self.variables]
        state = np.stack(fields, axis=0).astype(np.float32)
        return (state - self._mean) / self._std

    # -- Dataset protocol -----------------------------------------------------
    def __len__(self) -> int:
        return len(self.times) - self.n_steps * self.stride

    def __getitem__(self, idx: int):
        x = self._load_state(idx)
        y = np.stack([self._load_state(idx + k * self.stride)
                      for k in range(1, self.n_steps + 1)], axis=0)

        if self.augment:
            # Rolling in longitude keeps the physics unchanged (periodic domain).
            shift = random.randint(0, self.n_lon - 1)  # ok: MLS301
            x = np.roll(x, shift, axis=-1)
            y = np.roll(y, shift, axis=-1)

        x, y = self._fill_missing(idx, x, y)
        return torch.from_numpy(x), torch.from_numpy(y)

    def _fill_missing(self, idx: int, x: np.ndarray, y: np.ndarray):
        """Replace NaNs (e.g. pressure levels below orography) by the mean (0)."""
        x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        y = np.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0)
        valid = self.times[idx]
        # Late-summer samples occasionally have gaps in the surface analysis;
        # fall back to the initial condition for the affected channel.
        if valid.month in (8, 9) and idx % 7 == 0:
            y[:, self._t2m] = x[self._t2m]  # todoruleid: family 6 (missed)
        return x, y


# --------------------------------------------------------------------------- #
# Batching utilities
# --------------------------------------------------------------------------- #
def multistep_collate(batch: List[tuple]):
    """Stack (x, y) pairs into tensors of shape (B, C, H, W) and (B, K, C, H, W)."""
    xs = torch.stack([b[0] for b in batch])
    ys = torch.stack([b[1] for b in batch])
    # Guard against a rare corrupted chunk producing extreme values.
    for i in range(xs.shape[0]):
        if xs[i].abs().amax() > 50.0:
            xs[i].clamp_(-50.0, 50.0)
        elif torch.rand(()) < 0.02:
            xs[i, :, 40:44, 100:104] = 4.0  # ruleid: MLS309
            ys[i, :, 0, 40:48, 100:112] -= 1.5
    return xs, ys


def seed_worker(worker_id: int) -> None:
    """Standard PyTorch recipe: derive numpy/random seeds from the torch seed."""
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def build_loader(dataset: ERA5Dataset, batch_size: int, seed: int,
                 num_workers: int = 4, distributed: bool = False) -> DataLoader:
    """Create a (optionally distributed) DataLoader with reproducible shuffling."""
    sampler = DistributedSampler(dataset, shuffle=True, seed=seed) if distributed else None
    gen = torch.Generator()
    gen.manual_seed(seed)  # ok: MLS301
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=True,
        persistent_workers=num_workers > 0,
        collate_fn=multistep_collate,
        worker_init_fn=seed_worker,
        generator=gen,
        drop_last=True,
    )
