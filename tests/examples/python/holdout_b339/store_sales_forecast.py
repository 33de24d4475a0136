# ruff: noqa
# Hold-out batch 339 (16 short files). Measured once in session 11 (round 94): 14/17 (82%) at medium+.
"""Lightning module and training entry point for daily store-sales forecasting."""
import argparse

import pandas as pd
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, EarlyStopping
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class SalesMLP(pl.LightningModule):
    def __init__(self, n_features, hidden=256, lr=3e-4, dropout=0.2):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(n_features, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, 1))

    def forward(self, x):
        return self.net(x).squeeze(-1)

    def training_step(self, batch, _):
        loss = nn.functional.mse_loss(self(batch[0]), torch.log1p(batch[1]))
        self.log("train/rmsle", loss.sqrt())
        return loss

    def validation_step(self, batch, _):
        rmsle = nn.functional.mse_loss(self(batch[0]), torch.log1p(batch[1])).sqrt()
        self.log("val/rmsle", rmsle, prog_bar=True)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.trainer.max_epochs)  # ok: MLS302, MLS303, MLS304, MLS305
        return [opt], [sched]


class ThroughputMonitor(Callback):
    """Reports samples/sec; snapshots generator state so profiled runs stay comparable."""

    def on_train_start(self, trainer, pl_module):
        self._rng = torch.get_rng_state()
        self._seen = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        torch.set_rng_state(self._rng)  # ruleid: MLS301
        self._seen += batch[0].shape[0]


def frame_to_tensors(df, target="sales"):
    feats = df.drop(columns=[target, "date"]).astype("float32").values
    return TensorDataset(torch.from_numpy(feats), torch.from_numpy(df[target].values.astype("float32")))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--train", default="data/train.parquet")
    p.add_argument("--valid", default="data/valid.parquet")
    p.add_argument("--seed", type=int, default=17)
    args = p.parse_args()
    pl.seed_everything(args.seed, workers=True)  # ok: MLS301
    tr, va = frame_to_tensors(pd.read_parquet(args.train)), frame_to_tensors(pd.read_parquet(args.valid))
    model = SalesMLP(n_features=tr.tensors[0].shape[1])
    trainer = pl.Trainer(max_epochs=30, gradient_clip_val=1.0,  # ok: MLS302, MLS303, MLS304, MLS305
                         callbacks=[ThroughputMonitor(), EarlyStopping("val/rmsle", patience=4)])
    trainer.fit(model, DataLoader(tr, batch_size=512, shuffle=True), DataLoader(va, batch_size=1024))


if __name__ == "__main__":
    main()
