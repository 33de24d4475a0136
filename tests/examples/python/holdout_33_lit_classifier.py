# ruff: noqa
# Hold-out batch 33 (benchmark format, experienced-engineer style; by a helper that never saw mlscan's code). Measured once after round 13: 15/19 (79%) at medium+.
"""LightningModule and callbacks for the ResNet-18 CIFAR baseline."""
import argparse
import lightning.pytorch as pl
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision


class DropoutRampCallback(pl.Callback):
    """Linearly ramps the head dropout rate over the first few epochs."""

    def __init__(self, final_p=0.2, warmup_epochs=5):
        self.final_p = final_p
        self.warmup_epochs = warmup_epochs

    def on_train_epoch_start(self, trainer, pl_module):
        frac = min(1.0, trainer.current_epoch / max(1, self.warmup_epochs))
        pl_module.dropout.p = self.final_p * frac

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        # keep masks identical between a run and its resumed copy
        torch.cuda.manual_seed_all(trainer.current_epoch)  # ruleid: MLS301


class LitResNet(pl.LightningModule):
    def __init__(self, num_classes=10, lr=0.1, weight_decay=5e-4):
        super().__init__()
        self.save_hyperparameters()
        self.backbone = torchvision.models.resnet18(num_classes=512)
        self.dropout = nn.Dropout(0.0)
        self.head = nn.Linear(512, num_classes)
        nn.init.kaiming_normal_(self.head.weight, nonlinearity="linear")  # ok: MLS302, MLS303, MLS304, MLS305
        nn.init.zeros_(self.head.bias)

    def forward(self, x):
        return self.head(self.dropout(F.relu(self.backbone(x))))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y, label_smoothing=0.1)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/acc", (self(x).argmax(1) == y).float().mean(), sync_dist=True)

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9,
                              weight_decay=self.hparams.weight_decay, nesterov=True)
        sched = torch.optim.lr_scheduler.OneCycleLR(  # ok: MLS302, MLS303, MLS304, MLS305
            opt, max_lr=self.hparams.lr, total_steps=self.trainer.estimated_stepping_batches)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seed", type=int, default=17)
    args = p.parse_args()
    pl.seed_everything(args.seed, workers=True)  # ok: MLS301
    from cifar_dataset import build_loaders
    train_dl, val_dl = build_loaders("data/cifar10", batch_size=256, seed=args.seed)
    trainer = pl.Trainer(max_epochs=60, precision="16-mixed", gradient_clip_val=1.0,
                         callbacks=[DropoutRampCallback()])
    trainer.fit(LitResNet(), train_dl, val_dl)


if __name__ == "__main__":
    main()
