# ruff: noqa
# Hold-out batch 323 (16 short files). Measured once in session 11 (round 90): 14/16 (88%) at medium+.
"""LSTM forecaster for next-day cross-sectional stock returns, trained with PyTorch Lightning."""
import copy

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn as nn
from torch.utils.data import Dataset


class ReturnWindows(Dataset):
    def __init__(self, returns: np.ndarray, features: np.ndarray, window=60):
        self.r, self.f, self.window = returns.astype(np.float32), features.astype(np.float32), window

    def __len__(self):
        return len(self.r) - self.window - 1

    def __getitem__(self, t):
        x = np.concatenate([self.r[t:t + self.window, None], self.f[t:t + self.window]], axis=1)
        y = np.clip(self.r[t + self.window], -0.2, 0.2)  # ok: MLS309
        return torch.from_numpy(x), torch.tensor(y)


class ReturnLSTM(pl.LightningModule):
    def __init__(self, n_feat, hidden=64, lr=5e-4, ema_decay=0.995):
        super().__init__()
        self.save_hyperparameters()
        self.lstm = nn.LSTM(n_feat + 1, hidden, num_layers=2, batch_first=True, dropout=0.2)
        self.head = nn.Linear(hidden, 1)
        for name, w in self.lstm.named_parameters():
            if "weight_hh" in name:
                nn.init.orthogonal_(w)  # ok: MLS302, MLS303, MLS304, MLS305
        self.ema = copy.deepcopy(nn.ModuleList([self.lstm, self.head])).requires_grad_(False)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.head(out[:, -1]).squeeze(-1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        self.log("train/mse", loss)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        d = self.hparams.ema_decay
        with torch.no_grad():
            live = list(self.lstm.parameters()) + list(self.head.parameters())
            for e, p in zip(self.ema.parameters(), live):
                e.lerp_(p, 1.0 - d)  # ok: MLS302, MLS303, MLS304, MLS305

    def validation_step(self, batch, batch_idx):
        x, y = batch
        pred = self(x)
        ic = torch.corrcoef(torch.stack([pred, y]))[0, 1]
        self.log("val/ic", ic, sync_dist=True, prog_bar=True)  # ok: MLS306

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=1e-3)


def fit(train_loader, val_loader, n_feat, seed=11):
    pl.seed_everything(seed)  # ok: MLS301
    trainer = pl.Trainer(max_epochs=30, gradient_clip_val=0.5, deterministic=True,  # ok: MLS302, MLS303, MLS304, MLS305
                         callbacks=[pl.callbacks.EarlyStopping("val/ic", mode="max", patience=5)])
    trainer.fit(ReturnLSTM(n_feat), train_loader, val_loader)
    return trainer
