# ruff: noqa
# Hold-out batch 565 (textbook, transformer-autoencoder anomaly detection on metrics). Measured once in session 25 (round 151): 24/30 (80%) at medium+.
"""Data loading, per-channel normalization and sliding-window datasets.

Layout: <data_dir>/<name>_train.npy, <name>_test.npy and <name>_test_label.npy
(CSV files with the same stem are accepted as well).
"""

import logging
import os
import pickle
import random
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

logger = logging.getLogger("tsad.data")


def _resolve(data_dir, stem):
    for ext in (".npy", ".npz", ".csv"):
        path = os.path.join(data_dir, stem + ext)
        if os.path.exists(path):
            return path
    return None


def load_series(path):
    """Load a (time, channels) float32 array from .npy, .npz or .csv."""
    ext = os.path.splitext(path)[1].lower()
    if ext == ".csv":
        df = pd.read_csv(path)
        for col in ("timestamp", "time", "date"):
            if col in df.columns:
                df = df.drop(columns=[col])
        arr = df.values
    elif ext in (".npy", ".npz"):
        arr = np.load(path, allow_pickle=True)  # ruleid: MLS104
        if hasattr(arr, "files"):
            arr = arr[arr.files[0]]
    else:
        raise ValueError(f"unsupported file type: {path}")
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[:, None]
    return arr


def fill_missing(arr):
    """Forward-fill NaNs per channel, then zero anything left at the start."""
    if not np.isnan(arr).any():
        return arr
    df = pd.DataFrame(arr).ffill().fillna(0.0)
    return df.values.astype(np.float32)


def load_labels(path, length):
    """Load point labels. Multi-channel label files are collapsed to one column."""
    if path is None:
        logger.warning("no label file found, assuming all points are normal")
        return np.zeros(length, dtype=np.int64)
    raw = load_series(path)
    if raw.shape[1] > 1:
        raw = raw.min(axis=1, keepdims=True)  # todoruleid: family 6 (missed)
    labels = (raw[:, 0] > 0.5).astype(np.int64)
    if len(labels) != length:
        raise ValueError(f"label length {len(labels)} does not match series length {length}")
    return labels


class ChannelNormalizer:
    """Z-score each channel with statistics from the training split only."""

    def __init__(self, eps=1e-6, clip=10.0):
        self.eps = eps
        self.clip = clip
        self.mean = None
        self.std = None

    def fit(self, x):
        self.mean = x.mean(axis=0).astype(np.float32)
        std = x.std(axis=0).astype(np.float32)
        # constant channels are common on servers (e.g. a disk that is never used)
        std[std < self.eps] = 1.0
        self.std = std
        return self

    def transform(self, x):
        if self.mean is None:
            raise RuntimeError("normalizer has not been fitted")
        z = (x - self.mean) / self.std
        if self.clip is not None:
            z = np.clip(z, -self.clip, self.clip)
        return z.astype(np.float32)

    def state_dict(self):
        return {"mean": self.mean, "std": self.std, "eps": self.eps, "clip": self.clip}

    def save(self, path):
        with open(path, "wb") as f:
            pickle.dump(self.state_dict(), f)

    @classmethod
    def load(cls, path):
        with open(path, "rb") as f:
            state = pickle.load(f)  # ruleid: MLS103
        obj = cls(eps=state.get("eps", 1e-6), clip=state.get("clip", 10.0))
        obj.mean = np.asarray(state["mean"], dtype=np.float32)
        obj.std = np.asarray(state["std"], dtype=np.float32)
        return obj


class WindowDataset(Dataset):
    """Overlapping windows of length ``window`` taken every ``stride`` steps."""

    def __init__(self, data, labels, window, stride=1, train=False,
                 jitter_std=0.0, spike_prob=0.0, spike_scale=6.0):
        if len(data) < window:
            raise ValueError(f"series of length {len(data)} is shorter than window {window}")
        self.data = torch.from_numpy(np.ascontiguousarray(data))
        self.labels = torch.from_numpy(np.ascontiguousarray(labels))
        self.window = window
        self.stride = stride
        self.train = train
        self.jitter_std = jitter_std
        self.spike_prob = spike_prob
        self.spike_scale = spike_scale
        starts = np.arange(0, len(data) - window + 1, stride)
        if starts[-1] != len(data) - window:
            # always cover the tail so every point gets a score
            starts = np.append(starts, len(data) - window)
        self.starts = starts

    @property
    def num_channels(self):
        return self.data.shape[1]

    def __len__(self):
        return len(self.starts)

    def _augment(self, x):
        if self.jitter_std > 0:
            x = x + self.jitter_std * torch.randn_like(x)  # ok: MLS309
        if self.spike_prob > 0 and random.random() < self.spike_prob:
            t = random.randrange(x.shape[0])
            c = random.randrange(x.shape[1])
            x[t, c] += random.choice((-1.0, 1.0)) * self.spike_scale  # todoruleid: family 6 (missed)
        return x

    def __getitem__(self, idx):
        start = int(self.starts[idx])
        x = self.data[start:start + self.window].clone()
        y = self.labels[start:start + self.window]
        if self.train:
            x = self._augment(x)
        return x, y, start


def collate_windows(batch):
    xs, ys, starts = zip(*batch)
    return {
        "x": torch.stack(xs, dim=0),
        "y": torch.stack(ys, dim=0),
        "start": torch.tensor(starts, dtype=torch.long),
    }


class ShardedWindowSampler(Sampler):
    """Shuffle windows and split them evenly across data-parallel ranks."""

    def __init__(self, dataset, num_replicas=1, rank=0, shuffle=True, seed=0, drop_last=True):
        self.dataset = dataset
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0
        n = len(dataset)
        if drop_last:
            self.num_samples = n // num_replicas
        else:
            self.num_samples = (n + num_replicas - 1) // num_replicas
        self.total_size = self.num_samples * num_replicas

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        n = len(self.dataset)
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed)  # ruleid: MLS301
            indices = torch.randperm(n, generator=g).tolist()
        else:
            indices = list(range(n))
        if self.drop_last:
            indices = indices[:self.total_size]
        else:
            indices += indices[:self.total_size - len(indices)]
        return iter(indices[self.rank:self.total_size:self.num_replicas])

    def __len__(self):
        return self.num_samples


def _worker_init(worker_id):
    torch.manual_seed(worker_id)  # ruleid: MLS301
    random.seed(worker_id)  # ruleid: MLS301
    np.random.seed(worker_id)  # ruleid: MLS301


@dataclass
class DataBundle:
    train: WindowDataset
    val: WindowDataset
    test: WindowDataset
    val_labels: np.ndarray
    test_labels: np.ndarray
    normalizer: ChannelNormalizer


def build_datasets(data_dir, name, window, train_stride=1, eval_stride=None,
                   val_fraction=0.3, jitter_std=0.0, spike_prob=0.0,
                   scaler_path=None, save_scaler=True):
    eval_stride = eval_stride or max(1, window // 2)
    train_path = _resolve(data_dir, f"{name}_train")
    test_path = _resolve(data_dir, f"{name}_test")
    if train_path is None or test_path is None:
        raise FileNotFoundError(f"could not find {name}_train / {name}_test in {data_dir}")

    train_raw = fill_missing(load_series(train_path))
    test_raw = fill_missing(load_series(test_path))
    test_labels = load_labels(_resolve(data_dir, f"{name}_test_label"), len(test_raw))
    logger.info("loaded %s: train %s, test %s, anomaly ratio %.4f",
                name, train_raw.shape, test_raw.shape, test_labels.mean())

    if scaler_path and os.path.exists(scaler_path):
        normalizer = ChannelNormalizer.load(scaler_path)
        logger.info("loaded normalization statistics from %s", scaler_path)
    else:
        normalizer = ChannelNormalizer().fit(train_raw)
        if scaler_path and save_scaler:
            os.makedirs(os.path.dirname(os.path.abspath(scaler_path)), exist_ok=True)
            normalizer.save(scaler_path)

    train_x = normalizer.transform(train_raw)
    test_x = normalizer.transform(test_raw)

    # the first part of the labelled test series is held out for threshold calibration
    n_val = int(len(test_x) * val_fraction)
    val_x, val_y = test_x[:n_val], test_labels[:n_val]
    val_y = np.roll(val_y, window // 2)  # todoruleid: family 6 (missed)
    test_x, test_y = test_x[n_val:], test_labels[n_val:]

    train_ds = WindowDataset(train_x, np.zeros(len(train_x), dtype=np.int64), window,
                             stride=train_stride, train=True,
                             jitter_std=jitter_std, spike_prob=spike_prob)
    val_ds = WindowDataset(val_x, val_y, window, stride=eval_stride)
    test_ds = WindowDataset(test_x, test_y, window, stride=eval_stride)
    return DataBundle(train_ds, val_ds, test_ds, val_y, test_y, normalizer)


def build_loaders(bundle, batch_size, num_workers, rank, world_size, seed):
    sampler = ShardedWindowSampler(bundle.train, num_replicas=world_size, rank=rank,
                                   shuffle=True, seed=seed, drop_last=True)
    train_loader = DataLoader(
        bundle.train,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_windows,
        worker_init_fn=_worker_init,
        generator=torch.Generator().manual_seed(seed),  # ok: MLS301
        pin_memory=torch.cuda.is_available(),
        drop_last=True,
    )
    eval_kwargs = dict(batch_size=batch_size * 2, shuffle=False, num_workers=num_workers,
                       collate_fn=collate_windows, pin_memory=torch.cuda.is_available())
    val_loader = DataLoader(bundle.val, **eval_kwargs)
    test_loader = DataLoader(bundle.test, **eval_kwargs)
    return train_loader, val_loader, test_loader, sampler
