# ruff: noqa
# Hold-out batch 271 (short files). Measured once in session 9 (round 77): 16/17 (94%) at medium+.
"""Lightning training entry point for the camera-trap species classifier."""
import argparse

import numpy as np
import pytorch_lightning as pl
import timm
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint


class SpeciesClassifier(pl.LightningModule):
    def __init__(self, num_classes, lr=3e-4, mixup_alpha=0.2, smoothing=0.1):
        super().__init__()
        self.save_hyperparameters()
        self.net = timm.create_model("convnext_tiny", pretrained=True, num_classes=num_classes)

    def training_step(self, batch, batch_idx):
        x, y = batch
        lam = float(np.random.beta(self.hparams.mixup_alpha, self.hparams.mixup_alpha))
        perm = torch.randperm(x.size(0), device=x.device)
        x = lam * x + (1 - lam) * x[perm]  # ok: MLS309
        logits = self.net(x)
        s = self.hparams.smoothing
        loss = lam * F.cross_entropy(logits, y, label_smoothing=s) + (1 - lam) * F.cross_entropy(logits, y[perm], label_smoothing=s)  # ok: MLS309
        self.log("train/loss", loss, prog_bar=True, sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        acc = (logits.argmax(-1) == y).float().mean()
        self.log_dict({"val/loss": F.cross_entropy(logits, y), "val/acc": acc}, sync_dist=True)

    def on_validation_epoch_end(self):
        if self.trainer.is_global_zero:  # ok: MLS306
            self.print(f"epoch {self.current_epoch}: {self.trainer.callback_metrics.get('val/acc')}")

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=0.05)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.trainer.max_epochs)  # ok: MLS302, MLS303, MLS304, MLS305
        return {"optimizer": opt, "lr_scheduler": sched}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seed", type=int, default=17)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--num-classes", type=int, default=48)
    args = p.parse_args()
    pl.seed_everything(args.seed, workers=True)  # ok: MLS301
    from camtrap_datamodule import CamTrapDataModule
    dm = CamTrapDataModule(batch_size=64)
    callbacks = [EarlyStopping("val/acc", mode="max", patience=5), ModelCheckpoint(monitor="val/acc", mode="max")]  # ok: MLS307
    trainer = pl.Trainer(max_epochs=args.epochs, precision="16-mixed", gradient_clip_val=1.0, callbacks=callbacks)  # ok: MLS302, MLS303, MLS304, MLS305
    trainer.fit(SpeciesClassifier(args.num_classes), datamodule=dm)


if __name__ == "__main__":
    main()
