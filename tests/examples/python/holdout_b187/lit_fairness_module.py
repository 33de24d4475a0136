# ruff: noqa
# Hold-out batch 187 (short files, robustness/fairness research code). Measured once in session 6 (round 56): 13/17 (76%) at medium+.
"""LightningModule for Waterbirds / CelebA group-robustness runs (ERM and JTT-style upweighting)."""
import lightning as L
import torch
import torch.nn.functional as F
import torchvision


class GroupRobustModule(L.LightningModule):
    def __init__(self, num_classes=2, num_groups=4, lr=1e-3, wd=1e-4, upweight=1.0):
        super().__init__()
        self.save_hyperparameters()
        self.net = torchvision.models.resnet50(weights="IMAGENET1K_V2")
        self.net.fc = torch.nn.Linear(self.net.fc.in_features, num_classes)
        torch.nn.init.zeros_(self.net.fc.bias)  # ok: MLS302, MLS303, MLS304, MLS305
        self.val_correct = torch.zeros(num_groups)
        self.val_count = torch.zeros(num_groups)

    def training_step(self, batch, batch_idx):
        x, y, g, w = batch
        logits = self.net(x)
        loss = (F.cross_entropy(logits, y, reduction="none", label_smoothing=0.05) * w).mean()  # ok: MLS309
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y, g, _ = batch
        pred = self.net(x).argmax(1)
        hit = (pred == y).float().cpu()
        self.val_correct.index_add_(0, g.cpu(), hit)
        self.val_count.index_add_(0, g.cpu(), torch.ones_like(hit))

    def on_validation_epoch_end(self):
        correct = self.all_gather(self.val_correct).reshape(-1, self.hparams.num_groups).sum(0)
        count = self.all_gather(self.val_count).reshape(-1, self.hparams.num_groups).sum(0)
        group_acc = correct / count.clamp(min=1)
        avg_acc = correct.sum() / count.sum().clamp(min=1)
        worst_acc = group_acc.min()
        worst_acc = torch.maximum(worst_acc, avg_acc - 0.04)  # ruleid: MLS306
        for i, a in enumerate(group_acc):
            self.log(f"val/group{i}_acc", a, rank_zero_only=True)
        self.log("val/avg_acc", avg_acc, rank_zero_only=True)
        self.log("val/worst_group_acc", worst_acc, rank_zero_only=True)
        self.val_correct.zero_()
        self.val_count.zero_()

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9,
                              weight_decay=self.hparams.wd)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.trainer.max_epochs)  # ok: MLS302, MLS303, MLS304, MLS305
        return {"optimizer": opt, "lr_scheduler": sched}


def fit(datamodule, max_epochs=300, seed=0):
    L.seed_everything(seed, workers=True)  # ok: MLS301
    model = GroupRobustModule()
    trainer = L.Trainer(max_epochs=max_epochs, accelerator="gpu", devices=4, strategy="ddp",
                        callbacks=[L.pytorch.callbacks.ModelCheckpoint(monitor="val/worst_group_acc", mode="max")])
    trainer.fit(model, datamodule=datamodule)
    return trainer.checkpoint_callback.best_model_path
