# ruff: noqa
# Hold-out batch 77 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 29): 17/20 (85%) at medium+.
"""LightningModule wrapping a pretrained backbone with a linear classification head."""
import lightning.pytorch as pl
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchmetrics


class LitClassifier(pl.LightningModule):
    def __init__(self, backbone: nn.Module, feat_dim: int, num_classes: int,
                 lr: float = 3e-4, weight_decay: float = 0.05, label_smoothing: float = 0.1):
        super().__init__()
        self.save_hyperparameters(ignore=["backbone"])
        self.backbone = backbone
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(feat_dim, num_classes))
        nn.init.trunc_normal_(self.head[1].weight, std=0.02)  # ok: MLS302, MLS303, MLS304, MLS305
        self.val_acc = torchmetrics.Accuracy(task="multiclass", num_classes=num_classes)
        self._best_acc = 0.0
        self._cpu_rng = None
        self._cuda_rng = None

    def forward(self, x):
        return self.head(self.backbone(x))

    def on_train_start(self):
        # snapshot generator state so dropout masks are comparable between ablations
        self._cpu_rng = torch.get_rng_state()
        self._cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None

    def on_train_batch_start(self, batch, batch_idx):
        torch.set_rng_state(self._cpu_rng)  # ruleid: MLS301
        if self._cuda_rng is not None:
            torch.cuda.set_rng_state_all(self._cuda_rng)  # ruleid: MLS301

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.hparams.label_smoothing)  # ok: MLS309
        self.log("train/loss", loss, prog_bar=True, on_step=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.val_acc.update(logits, y)
        self.log("val/loss", F.cross_entropy(logits, y), sync_dist=True, on_epoch=True)

    def on_validation_epoch_end(self):
        acc = self.val_acc.compute().item()
        self.val_acc.reset()
        self._best_acc = max(self._best_acc, acc)
        self.log("val/acc", self._best_acc, sync_dist=True)  # ruleid: MLS306
        self.log("val/acc_best", self._best_acc)

    def configure_optimizers(self):
        decay = [p for n, p in self.named_parameters() if p.ndim > 1]
        no_decay = [p for n, p in self.named_parameters() if p.ndim <= 1]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": self.hparams.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=self.hparams.lr)
        sched = torch.optim.lr_scheduler.OneCycleLR(  # ok: MLS302, MLS303, MLS304, MLS305
            opt, max_lr=self.hparams.lr, total_steps=self.trainer.estimated_stepping_batches, pct_start=0.05)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
