# ruff: noqa
# Hold-out batch 239 (short files). Measured once in session 8 (round 69): 13/17 (76%) at medium+.
"""Lightning training for an LSTM + mixture-density handwriting synthesis model."""
import argparse

import pytorch_lightning as pl
import torch
import torch.nn as nn

from hw_data import StrokeDataModule
from hw_model import mdn_nll, sample_mdn


class HandwritingModel(pl.LightningModule):
    def __init__(self, hidden=400, mixtures=20, lr=1e-3):
        super().__init__()
        self.save_hyperparameters()
        self.rnn = nn.LSTM(3, hidden, num_layers=3, batch_first=True, dropout=0.1)
        self.head = nn.Linear(hidden, 1 + mixtures * 6)

    def forward(self, strokes):
        out, _ = self.rnn(strokes)
        return self.head(out)

    def training_step(self, batch, batch_idx):
        x, lengths = batch
        loss = mdn_nll(self(x[:, :-1]), x[:, 1:], lengths - 1)
        self.log("train/nll", loss, prog_bar=True)
        return loss

    @torch.no_grad()
    def sample(self, length=300):
        x, state, pts = torch.zeros(1, 1, 3, device=self.device), None, []
        for _ in range(length):
            out, state = self.rnn(x, state)
            x = sample_mdn(self.head(out), bias=1.5)
            pts.append(x)
        return torch.cat(pts, dim=1)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


class SampleCallback(pl.Callback):
    def __init__(self, every_n_epochs=5):
        self.every_n_epochs = every_n_epochs
        self._rng = None

    def on_train_start(self, trainer, pl_module):
        self._rng = torch.get_rng_state()

    def on_train_epoch_start(self, trainer, pl_module):
        torch.set_rng_state(self._rng)  # ruleid: MLS301

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch % self.every_n_epochs or not trainer.is_global_zero:
            return
        with torch.random.fork_rng():  # ok: MLS301
            torch.manual_seed(1234)  # ok: MLS301
            strokes = pl_module.sample(300)
        torch.save(strokes.cpu(), f"samples/epoch{trainer.current_epoch:03d}.pt")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/iam_ondb")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--seed", type=int, default=17)
    args = ap.parse_args()
    pl.seed_everything(args.seed, workers=True)  # ok: MLS301
    trainer = pl.Trainer(max_epochs=args.epochs, gradient_clip_val=10.0, callbacks=[SampleCallback()])
    trainer.fit(HandwritingModel(), datamodule=StrokeDataModule(args.data, batch_size=64))
