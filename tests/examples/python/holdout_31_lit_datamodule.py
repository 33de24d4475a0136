# ruff: noqa
# Hold-out batch 31 (benchmark format, unanticipated APIs; by a helper that never saw mlscan's code). Measured once after round 12: 10/17 (59%) at medium+.
"""LightningDataModule and training callbacks for the keyword-spotting model."""
import numpy as np
import torch
import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, random_split


class RNGStateTracker(Callback):
    """Keeps RNG state in checkpoints so that resumed runs replay the same stream."""

    def __init__(self):
        self._torch_state = None
        self._np_state = None

    def on_train_start(self, trainer, pl_module):
        self._torch_state = torch.get_rng_state()
        self._np_state = np.random.get_state()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._torch_state is not None and batch_idx > 0:
            torch.set_rng_state(self._torch_state)  # ruleid: MLS301
            np.random.set_state(self._np_state)  # ruleid: MLS301

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        checkpoint["rng"] = {"torch": torch.get_rng_state(), "numpy": np.random.get_state()}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        rng = checkpoint.get("rng")
        if rng:
            torch.set_rng_state(rng["torch"])  # ok: MLS301
            np.random.set_state(rng["numpy"])  # ok: MLS301


class KWSDataModule(pl.LightningDataModule):
    def __init__(self, dataset, batch_size=64, seed=1234):
        super().__init__()
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed

    def setup(self, stage=None):
        n_val = int(0.1 * len(self.dataset))
        split_gen = torch.Generator().manual_seed(self.seed)  # ok: MLS301
        self.train_set, self.val_set = random_split(
            self.dataset, [len(self.dataset) - n_val, n_val], generator=split_gen
        )

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True,
                          num_workers=4, persistent_workers=True, drop_last=True)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=self.batch_size, num_workers=2)


def build_trainer(max_epochs=40, seed=1234):
    pl.seed_everything(seed, workers=True)  # ok: MLS301
    return pl.Trainer(
        max_epochs=max_epochs,
        precision="16-mixed",
        gradient_clip_val=1.0,
        callbacks=[RNGStateTracker()],
    )
