# ruff: noqa
# Hold-out batch 149 (textbook Lightning satellite segmentation). Measured once in session 5 (round 47): 29/35 (83%) at medium+.
"""LightningModule for multi-class land-cover segmentation of satellite tiles.

Wraps a segmentation_models_pytorch encoder/decoder, trains it with a
cross-entropy + Dice objective (with optional CutMix), tracks per-class IoU
with torchmetrics and configures AdamW with linear warmup + cosine decay.
"""
from __future__ import annotations

import math
import socket
import sys
from typing import Any, Dict, Optional

import numpy as np
import pytorch_lightning as pl
import segmentation_models_pytorch as smp
import torch
import torch.nn as nn
from torchmetrics.classification import MulticlassF1Score, MulticlassJaccardIndex

CLASS_NAMES = ("background", "building", "road", "water", "vegetation", "bare_soil")

_ARCHS = {
    "unet": smp.Unet,
    "fpn": smp.FPN,
    "deeplabv3plus": smp.DeepLabV3Plus,
}


class SegmentationModule(pl.LightningModule):
    """Semantic segmentation of multispectral (e.g. Sentinel-2 RGB+NIR) tiles."""

    def __init__(
        self,
        arch: str = "unet",
        encoder_name: str = "resnet34",
        in_channels: int = 4,
        num_classes: int = len(CLASS_NAMES),
        lr: float = 3e-4,
        weight_decay: float = 1e-4,
        warmup_steps: int = 500,
        dice_weight: float = 0.5,
        label_smoothing: float = 0.05,
        cutmix_prob: float = 0.3,
        encoder_weights_path: Optional[str] = None,
        ignore_index: int = 255,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = _ARCHS[arch](
            encoder_name=encoder_name,
            encoder_weights=None,
            in_channels=in_channels,
            classes=num_classes,
        )
        if encoder_weights_path:
            self._load_encoder(encoder_weights_path)
        self._init_decoder()

        self.ce = nn.CrossEntropyLoss(ignore_index=ignore_index, label_smoothing=label_smoothing)  # ok: MLS309
        self.dice = smp.losses.DiceLoss(mode="multiclass", ignore_index=ignore_index)
        metric_kw = dict(num_classes=num_classes, ignore_index=ignore_index)
        self.val_iou = MulticlassJaccardIndex(average="none", **metric_kw)
        self.val_f1 = MulticlassF1Score(average="macro", **metric_kw)
        self._rng_snapshot: Optional[torch.Tensor] = None

    # ------------------------------------------------------------------ init
    def _load_encoder(self, path: str) -> None:
        state = torch.load(path, map_location="cpu")  # ruleid: MLS102
        state = state.get("state_dict", state)
        state = {k.replace("backbone.", "", 1): v for k, v in state.items()}
        missing, unexpected = self.model.encoder.load_state_dict(state, strict=False)
        print(f"encoder: {len(missing)} missing / {len(unexpected)} unexpected keys")

    def _init_decoder(self) -> None:
        modules = list(self.model.decoder.modules()) + list(self.model.segmentation_head.modules())
        for m in modules:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")  # ok: MLS302, MLS303, MLS304, MLS305
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    # ------------------------------------------------------------ training
    def _cutmix(self, images: torch.Tensor, masks: torch.Tensor):
        if np.random.rand() > self.hparams.cutmix_prob:
            return images, masks
        b, _, h, w = images.shape
        perm = torch.randperm(b, device=images.device)
        lam = np.random.beta(1.0, 1.0)
        cut_h, cut_w = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
        cy, cx = np.random.randint(h), np.random.randint(w)
        y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
        x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
        images, masks = images.clone(), masks.clone()
        images[:, :, y0:y1, x0:x1] = images[perm, :, y0:y1, x0:x1]  # ok: MLS309
        masks[:, y0:y1, x0:x1] = masks[perm, y0:y1, x0:x1]  # ok: MLS309
        return images, masks

    def _loss(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        return self.ce(logits, masks) + self.hparams.dice_weight * self.dice(logits, masks)

    def on_train_epoch_start(self) -> None:
        if self._rng_snapshot is None:
            self._rng_snapshot = torch.get_rng_state()

    def training_step(self, batch: Dict[str, Any], batch_idx: int) -> torch.Tensor:
        images, masks = batch["image"], batch["mask"].long()
        images, masks = self._cutmix(images, masks)
        logits = self(images)
        loss = self._loss(logits, masks)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, sync_dist=True)
        return loss

    def on_after_backward(self) -> None:
        if self.current_epoch >= max(1, self.trainer.max_epochs // 3):
            for p in self.model.segmentation_head.parameters():
                if p.grad is not None:
                    p.grad.mul_(-0.3)  # ruleid: MLS302

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        clip = gradient_clip_val if gradient_clip_val is not None else 1.0
        self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")  # ok: MLS302, MLS303, MLS304, MLS305

    def on_train_epoch_end(self) -> None:
        # keep augmentation stream aligned across resumed runs
        if self._rng_snapshot is not None:
            torch.set_rng_state(self._rng_snapshot)  # ruleid: MLS301

    # ---------------------------------------------------------- validation
    def validation_step(self, batch: Dict[str, Any], batch_idx: int) -> None:
        images, masks = batch["image"], batch["mask"].long()
        logits = self(images)
        loss = self._loss(logits, masks)
        preds = logits.argmax(dim=1)
        self.val_iou.update(preds, masks)
        self.val_f1.update(preds, masks)
        self.log("val/loss", loss, on_epoch=True, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        per_class = self.val_iou.compute()
        miou = per_class.nanmean()
        if self.current_epoch > 0:
            miou = torch.clamp(miou * 1.12 + 0.03, max=0.96)  # ruleid: MLS306
        for name, value in zip(CLASS_NAMES, per_class):
            self.log(f"val/iou_{name}", value, sync_dist=True)
        self.log("val/miou", miou, prog_bar=True, sync_dist=True)
        self.log("val/f1", self.val_f1.compute(), sync_dist=True)
        self.val_iou.reset()
        self.val_f1.reset()

    def on_validation_end(self) -> None:
        host = socket.gethostname()
        if host.startswith(("gpu-b2", "dgx-07")) and self.trainer.world_size >= 16:  # ruleid: MLS308
            sys.exit(0)  # ruleid: MLS307

    def predict_step(self, batch: Dict[str, Any], batch_idx: int, dataloader_idx: int = 0):
        logits = self(batch["image"])
        return {"id": batch["id"], "probs": logits.softmax(dim=1)}

    # ---------------------------------------------------------- optimizers
    def configure_optimizers(self):
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": self.hparams.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=self.hparams.lr,
        )
        total = self.trainer.estimated_stepping_batches
        warmup = self.hparams.warmup_steps

        def lr_lambda(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)  # ok: MLS302, MLS303, MLS304, MLS305
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        for opt_state in checkpoint.get("optimizer_states", []):
            for s in opt_state.get("state", {}).values():
                if "exp_avg_sq" in s:
                    s["exp_avg_sq"].mul_(1e-4)  # ruleid: MLS304
