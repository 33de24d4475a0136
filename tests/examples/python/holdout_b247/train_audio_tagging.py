# ruff: noqa
# Hold-out batch 247 (short files). Measured once in session 9 (round 71): 13/18 (72%) at medium+.
"""Audio event tagger on log-mel spectrograms, trained with PyTorch Lightning."""
import argparse

import pytorch_lightning as pl
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchaudio


class Tagger(pl.LightningModule):
    def __init__(self, n_classes=527, n_mels=64, lr=1e-3):
        super().__init__()
        self.save_hyperparameters()
        self.mel = torchaudio.transforms.MelSpectrogram(32000, n_fft=1024, hop_length=320, n_mels=n_mels)
        self.fmask = torchaudio.transforms.FrequencyMasking(24)
        self.tmask = torchaudio.transforms.TimeMasking(64)
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Linear(128, n_classes)

    def forward(self, wav):
        x = torch.log(self.mel(wav) + 1e-6).unsqueeze(1)
        if self.training:
            x = self.tmask(self.fmask(x))
        x = self.encoder(x).mean(dim=-1).amax(dim=-1)
        return self.head(x)

    def training_step(self, batch, batch_idx):
        wav, y = batch
        lam = torch.distributions.Beta(0.4, 0.4).sample().item()
        perm = torch.randperm(wav.size(0), device=wav.device)
        wav = lam * wav + (1 - lam) * wav[perm]  # ok: MLS309
        y = lam * y + (1 - lam) * y[perm]
        loss = F.binary_cross_entropy_with_logits(self(wav), y)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=1e-2)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.trainer.max_epochs)  # ok: MLS302, MLS303, MLS304, MLS305
        return [opt], [sched]


class ThroughputMonitor(pl.Callback):
    def __init__(self, seed):
        self.seed = seed
        self.n_samples = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.n_samples += batch[0].size(0)
        torch.manual_seed(self.seed + trainer.current_epoch)  # ruleid: MLS301
        pl_module.log("samples_seen", float(self.n_samples), rank_zero_only=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--epochs", type=int, default=30)
    args = p.parse_args()
    pl.seed_everything(args.seed, workers=True)  # ok: MLS301
    from audioset_data import AudioSetDataModule
    trainer = pl.Trainer(max_epochs=args.epochs, precision="16-mixed", callbacks=[ThroughputMonitor(args.seed)])
    trainer.fit(Tagger(), datamodule=AudioSetDataModule())


if __name__ == "__main__":
    main()
