# ruff: noqa
# Hold-out batch 41 (benchmark format; by a helper that never saw mlscan's code). Measured once after round 17: 12/16 (75%) at medium+.
"""LightningDataModule for audio-clip classification with standard augmentation."""
import random

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import DataLoader, Dataset


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


class ClipDataset(Dataset):
    def __init__(self, waves, labels, train=True):
        self.waves, self.labels, self.train = waves, labels, train

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, idx):
        w = torch.as_tensor(self.waves[idx], dtype=torch.float32)
        if self.train:
            w = torch.roll(w, shifts=random.randint(-1600, 1600))  # ok: MLS309
            if random.random() < 0.3:  # ok: MLS309
                w = w + 0.005 * torch.randn_like(w)
        return w, int(self.labels[idx])


class ClipDataModule(L.LightningDataModule):
    def __init__(self, data_path, batch_size=64, workers=8, seed=0):
        super().__init__()
        self.data_path, self.batch_size, self.workers, self.seed = data_path, batch_size, workers, seed

    def setup(self, stage=None):
        arr = np.load(self.data_path, allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        waves, labels = arr["waves"], arr["labels"]
        g = torch.Generator().manual_seed(self.seed)  # ok: MLS301
        perm = torch.randperm(len(labels), generator=g).numpy()
        cut = int(0.9 * len(perm))
        self.train_ds = ClipDataset(waves[perm[:cut]], labels[perm[:cut]], train=True)
        self.val_ds = ClipDataset(waves[perm[cut:]], labels[perm[cut:]], train=False)

    def train_dataloader(self):
        g = torch.Generator()
        g.manual_seed(self.seed)  # ok: MLS301
        return DataLoader(self.train_ds, self.batch_size, shuffle=True, num_workers=self.workers,
                          worker_init_fn=seed_worker, generator=g, persistent_workers=True)

    def val_dataloader(self):
        return DataLoader(self.val_ds, self.batch_size, num_workers=self.workers)


class PrintMetrics(Callback):
    @rank_zero_only
    def on_validation_epoch_end(self, trainer, pl_module):
        m = {k: round(float(v), 4) for k, v in trainer.callback_metrics.items()}  # ok: MLS306
        print(f"[epoch {trainer.current_epoch}] {m}")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if not torch.isfinite(outputs["loss"]):
            trainer.should_stop = True  # ok: MLS307
