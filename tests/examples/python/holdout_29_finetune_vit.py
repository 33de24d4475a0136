# ruff: noqa
# Hold-out batch 29 (benchmark format; by a helper that never saw mlscan's code). Measured once after round 11: 15/17 (88%) at medium+.
"""LightningModule for fine-tuning a ViT backbone on a downstream image task."""
import os

import pytorch_lightning as pl
import timm
import torch
import torch.nn as nn
from safetensors.torch import load_file


class ViTFinetune(pl.LightningModule):
    def __init__(self, num_classes, backbone="vit_base_patch16_224", init_ckpt=None, lr=1e-4):
        super().__init__()
        self.save_hyperparameters()
        self.model = timm.create_model(backbone, pretrained=False, num_classes=num_classes)
        if init_ckpt:
            self._load_backbone(init_ckpt)
        self.crit = nn.CrossEntropyLoss(label_smoothing=0.1)  # ok: MLS309

    def _load_backbone(self, path):
        if path.endswith(".safetensors"):
            sd = load_file(path, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        elif os.path.basename(path).startswith("trusted_"):
            sd = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        else:
            sd = torch.load(path, map_location="cpu")  # ruleid: MLS102
        sd = {k: v for k, v in sd.items() if not k.startswith("head.")}
        missing, unexpected = self.model.load_state_dict(sd, strict=False)
        print(f"loaded backbone: {len(missing)} missing, {len(unexpected)} unexpected")

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self.crit(self.model(x), y)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.model(x)
        acc = (logits.argmax(-1) == y).float().mean()
        self.log("val/acc", acc, sync_dist=True, prog_bar=True)  # ok: MLS306

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=0.05)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.hparams.lr,
                                                    total_steps=self.trainer.estimated_stepping_batches)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
