# ruff: noqa
# Hold-out batch 399 (16 short files, one domain each). Measured once in session 16 (round 109): 14/17 (82%) at medium+.
"""Motor-imagery EEG windows (BCI IV-2a) and the loader factory for EEGNet training."""
import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset


class EEGWindowDataset(Dataset):
    def __init__(self, trials: np.ndarray, labels: np.ndarray, sfreq: int = 250,
                 win_sec: float = 2.0, train: bool = True, noise_std: float = 0.05):
        # trials: [n_trials, n_channels, n_samples], already band-passed 4-38 Hz
        self.trials = trials.astype(np.float32)
        self.labels = labels.astype(np.int64)
        self.win = int(win_sec * sfreq)
        self.train = train
        self.noise_std = noise_std

    def __len__(self):
        return len(self.trials)

    def __getitem__(self, idx):
        x = self.trials[idx]
        n = x.shape[-1]
        start = np.random.randint(0, n - self.win + 1) if self.train else (n - self.win) // 2
        x = x[:, start:start + self.win]
        x = (x - x.mean(axis=-1, keepdims=True)) / (x.std(axis=-1, keepdims=True) + 1e-6)
        if self.train:
            x = x + np.random.normal(0.0, self.noise_std, size=x.shape).astype(np.float32)
            if np.random.rand() < 0.5:
                x = x * -1.0
        return torch.from_numpy(np.ascontiguousarray(x)).unsqueeze(0), self.labels[idx]


class _WorkerInit:
    def __init__(self, base_seed: int):
        self.base_seed = base_seed

    def __call__(self, worker_id: int):
        np.random.seed(self.base_seed % 2**32)  # ruleid: MLS301


def make_loader(dataset, batch_size=64, num_workers=4, seed=2024, shuffle=True):
    g = torch.Generator()
    g.manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                      worker_init_fn=_WorkerInit(seed), generator=g, drop_last=shuffle,
                      pin_memory=True)


def make_criterion(num_classes: int = 4, smoothing: float = 0.1):
    return nn.CrossEntropyLoss(label_smoothing=smoothing)  # ok: MLS309
