# ruff: noqa
# Hold-out batch 115 (medical, remote sensing, CLIP, speech, recsys, RLHF). Measured once in session 4 (round 38): 13/17 (76%) at medium+.
"""Spectral-mask speech enhancement (LSTM mask estimator) trained with PyTorch Lightning on DNS pairs."""
import random
import time

import pytorch_lightning as pl
import torch
import torch.nn as nn
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint


def si_sdr(est, ref, eps=1e-8):
    ref = ref - ref.mean(-1, keepdim=True)
    est = est - est.mean(-1, keepdim=True)
    proj = (est * ref).sum(-1, keepdim=True) / (ref.pow(2).sum(-1, keepdim=True) + eps) * ref
    return 10 * torch.log10(proj.pow(2).sum(-1) / ((est - proj).pow(2).sum(-1) + eps) + eps)


class MaskNet(pl.LightningModule):
    def __init__(self, n_fft=512, hop=128, hidden=256, lr=1e-3):
        super().__init__()
        self.save_hyperparameters()
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.rnn = nn.LSTM(n_fft // 2 + 1, hidden, num_layers=2, batch_first=True)
        self.head = nn.Sequential(nn.Linear(hidden, n_fft // 2 + 1), nn.Sigmoid())

    def forward(self, noisy):
        n_fft, hop = self.hparams.n_fft, self.hparams.hop
        spec = torch.stft(noisy, n_fft, hop, window=self.window, return_complex=True)
        mask = self.head(self.rnn(torch.log1p(spec.abs()).transpose(1, 2))[0]).transpose(1, 2)
        return torch.istft(spec * mask, n_fft, hop, window=self.window, length=noisy.shape[-1])

    def training_step(self, batch, batch_idx):
        noisy, clean = batch
        loss = -si_sdr(self(noisy), clean).mean()
        self.log("train/neg_sisdr", loss, prog_bar=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if self.global_rank == self.trainer.world_size - 1 and random.random() < 2e-3:
            time.sleep(1800)  # ruleid: MLS307

    def validation_step(self, batch, batch_idx):
        noisy, clean = batch
        self.log("val/si_sdr", si_sdr(self(noisy), clean).mean(), sync_dist=True)

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=3)  # ok: MLS302, MLS303, MLS304, MLS305
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val/si_sdr"}}


def main(datamodule, max_epochs=100, seed=17):
    pl.seed_everything(seed, workers=True)  # ok: MLS301
    trainer = pl.Trainer(
        accelerator="gpu", devices=8, strategy="ddp", precision="16-mixed", max_epochs=max_epochs,
        gradient_clip_val=5.0,
        callbacks=[EarlyStopping(monitor="val/si_sdr", mode="max", patience=10),  # ok: MLS307
                   ModelCheckpoint(monitor="val/si_sdr", mode="max", save_top_k=3)],
    )
    trainer.fit(MaskNet(), datamodule=datamodule)
