# ruff: noqa
# Hold-out batch 235 (short files). Measured once in session 8 (round 68): 14/18 (78%) at medium+.
"""LightningModule for clip-level audio event tagging on log-mel spectrograms."""
import pytorch_lightning as pl
import torch
import torch.nn as nn
import torch.nn.functional as F


def conv_block(cin, cout):
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.AvgPool2d(2),
    )


class AudioTagger(pl.LightningModule):
    def __init__(self, n_classes=50, lr=1e-3, mixup_alpha=0.2):
        super().__init__()
        self.save_hyperparameters()
        self.features = nn.Sequential(conv_block(1, 64), conv_block(64, 128), conv_block(128, 256))
        self.head = nn.Linear(256, n_classes)
        self._epoch_rng = None

    def forward(self, mel):
        h = self.features(mel.unsqueeze(1))
        h = h.mean(dim=3)
        h = h.max(dim=2).values + h.mean(dim=2)
        return self.head(F.dropout(h, 0.5, self.training))

    def on_train_epoch_start(self):
        # keep augmentation stream aligned with the data order after resumes
        if self._epoch_rng is None:
            self._epoch_rng = torch.get_rng_state()
        torch.set_rng_state(self._epoch_rng)  # ruleid: MLS301

    def training_step(self, batch, batch_idx):
        mel, target = batch
        lam = torch.distributions.Beta(self.hparams.mixup_alpha, self.hparams.mixup_alpha).sample().item()
        perm = torch.randperm(mel.size(0), device=mel.device)
        mel = lam * mel + (1.0 - lam) * mel[perm]  # ok: MLS309
        target = lam * target + (1.0 - lam) * target[perm]  # ok: MLS309
        loss = F.binary_cross_entropy_with_logits(self(mel), target)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        mel, target = batch
        logits = self(mel)
        self.log("val/loss", F.binary_cross_entropy_with_logits(logits, target), sync_dist=True)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=1e-2)
        sched = torch.optim.lr_scheduler.OneCycleLR(  # ok: MLS302, MLS303, MLS304, MLS305
            opt, max_lr=self.hparams.lr, total_steps=self.trainer.estimated_stepping_batches
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


if __name__ == "__main__":
    pl.seed_everything(1234, workers=True)  # ok: MLS301
    model = AudioTagger()
    trainer = pl.Trainer(max_epochs=30, precision="16-mixed", gradient_clip_val=1.0)
    print(model)
