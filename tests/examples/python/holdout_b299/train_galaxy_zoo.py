# ruff: noqa
# Hold-out batch 299 (16 short benchmark-format files). Measured once in session 10 (round 84): 13/19 (68%) at medium+.
"""Galaxy Zoo 2 morphology classifier (5 coarse classes) trained with PyTorch Lightning."""
import argparse

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import torchvision
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from torch.utils.data import DataLoader
from torchvision import transforms as T


class GalaxyNet(pl.LightningModule):
    def __init__(self, num_classes=5, lr=3e-4):
        super().__init__()
        self.save_hyperparameters()
        self.net = torchvision.models.resnet34(num_classes=num_classes)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y, label_smoothing=0.1)  # ok: MLS309
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        acc = (self(x).argmax(1) == y).float().mean()
        self.log("val/acc", acc, sync_dist=True)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=0.05)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.trainer.max_epochs)  # ok: MLS302, MLS303, MLS304, MLS305
        return [opt], [sched]


class AugmentationSync(pl.Callback):
    """Keeps the per-step augmentation stream aligned across DDP ranks."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        torch.manual_seed(trainer.global_step % 16)  # ruleid: MLS301


def loaders(root, bs):
    train_tf = T.Compose([T.RandomRotation(180), T.RandomHorizontalFlip(), T.RandomVerticalFlip(),
                          T.CenterCrop(256), T.Resize(224), T.ToTensor()])
    val_tf = T.Compose([T.CenterCrop(256), T.Resize(224), T.ToTensor()])
    tr = torchvision.datasets.ImageFolder(f"{root}/train", train_tf)
    va = torchvision.datasets.ImageFolder(f"{root}/val", val_tf)
    return (DataLoader(tr, bs, shuffle=True, num_workers=8, persistent_workers=True),
            DataLoader(va, bs, num_workers=8))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="data/gz2")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=40)
    args = ap.parse_args()
    pl.seed_everything(args.seed, workers=True)  # ok: MLS301
    train_dl, val_dl = loaders(args.root, 128)
    trainer = pl.Trainer(max_epochs=args.epochs, accelerator="gpu", devices=-1, strategy="ddp",
                         precision="16-mixed", gradient_clip_val=1.0,
                         callbacks=[AugmentationSync(), LearningRateMonitor(),
                                    ModelCheckpoint(monitor="val/acc", mode="max")])
    trainer.fit(GalaxyNet(), train_dl, val_dl)
