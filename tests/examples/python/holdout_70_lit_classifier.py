# ruff: noqa
# Hold-out batch 70 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 21/22 (95%) at medium+.
"""LightningModule + Trainer entry point for a ViT-Small image classifier."""
import argparse

import pytorch_lightning as pl
import timm
import torch
import torch.nn as nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms


class ReproducibleBatches(pl.Callback):
    """Snapshot RNG at fit start so resumed runs see the same augmentation draws."""

    def on_train_start(self, trainer, pl_module):
        self._cpu = torch.get_rng_state()
        self._cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        torch.set_rng_state(self._cpu)  # ruleid: MLS301
        if self._cuda is not None:
            torch.cuda.set_rng_state_all(self._cuda)  # ruleid: MLS301


class LitViT(pl.LightningModule):
    def __init__(self, lr=3e-4, wd=0.05, num_classes=100):
        super().__init__()
        self.save_hyperparameters()
        self.net = timm.create_model("vit_small_patch16_224", num_classes=num_classes, drop_path_rate=0.1)
        self.crit = nn.CrossEntropyLoss(label_smoothing=0.1)  # ok: MLS309

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self.crit(self.net(x), y)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        self.log("val/acc", (logits.argmax(-1) == y).float().mean(), sync_dist=True)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.wd)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.trainer.max_epochs)  # ok: MLS302, MLS303, MLS304, MLS305
        return {"optimizer": opt, "lr_scheduler": sched}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="/data/imagenet100")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    pl.seed_everything(args.seed, workers=True)  # ok: MLS301
    tf = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                             transforms.ToTensor()])
    vt = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()])
    tr = DataLoader(datasets.ImageFolder(f"{args.root}/train", tf), batch_size=128, shuffle=True, num_workers=8)
    va = DataLoader(datasets.ImageFolder(f"{args.root}/val", vt), batch_size=256, num_workers=8)
    trainer = pl.Trainer(max_epochs=100, gradient_clip_val=1.0, precision="16-mixed",  # ok: MLS302, MLS303, MLS304, MLS305
                         accelerator="gpu", devices=-1, strategy="ddp", callbacks=[ReproducibleBatches()])
    trainer.fit(LitViT(), tr, va)


if __name__ == "__main__":
    main()
