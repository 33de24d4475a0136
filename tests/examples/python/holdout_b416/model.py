# ruff: noqa
# Hold-out batch 416 (family-focused 5/6, road-scene segmentation). Measured once in session 17 (round 113): 6/30 (20%) at medium+.
"""DeepLabv3 (ResNet backbone + ASPP) and the Lightning module used for training/eval."""
from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence

import pytorch_lightning as pl
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from data import CATEGORY_NAMES, CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES, TRAIN_ID_TO_CATEGORY
from metrics import ConfusionMatrix, summarize

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------
# Network
# --------------------------------------------------------------------------------------
class ASPPConv(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int, dilation: int):
        super().__init__(
            nn.Conv2d(in_ch, out_ch, 3, padding=dilation, dilation=dilation, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )


class ASPPPooling(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int):
        super().__init__(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_ch, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        for mod in self:
            x = mod(x)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    def __init__(self, in_ch: int, rates: Sequence[int], out_ch: int = 256, dropout: float = 0.1):
        super().__init__()
        branches: List[nn.Module] = [
            nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch),
                          nn.ReLU(inplace=True))
        ]
        branches += [ASPPConv(in_ch, out_ch, r) for r in rates]
        branches.append(ASPPPooling(in_ch, out_ch))
        self.branches = nn.ModuleList(branches)
        self.project = nn.Sequential(
            nn.Conv2d(out_ch * len(branches), out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([b(x) for b in self.branches], dim=1))


class DeepLabV3(nn.Module):
    def __init__(
        self,
        num_classes: int = NUM_CLASSES,
        backbone: str = "resnet101",
        output_stride: int = 16,
        aux: bool = True,
        pretrained_backbone: Optional[str] = None,
    ):
        super().__init__()
        if output_stride == 16:
            dilate, rates = [False, False, True], (6, 12, 18)
        elif output_stride == 8:
            dilate, rates = [False, True, True], (12, 24, 36)
        else:
            raise ValueError(f"unsupported output stride {output_stride}")
        resnet = getattr(torchvision.models, backbone)(weights=None, replace_stride_with_dilation=dilate)
        if pretrained_backbone:
            state = torch.load(pretrained_backbone, map_location="cpu")  # ruleid: MLS102
            state = state.get("state_dict", state)
            state = {k.replace("module.", "", 1): v for k, v in state.items()}
            missing, unexpected = resnet.load_state_dict(state, strict=False)
            log.info("backbone init from %s (missing=%d, unexpected=%d)",
                     pretrained_backbone, len(missing), len(unexpected))
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool)
        self.layer1, self.layer2 = resnet.layer1, resnet.layer2
        self.layer3, self.layer4 = resnet.layer3, resnet.layer4
        self.aspp = ASPP(2048, rates)
        self.classifier = nn.Sequential(
            nn.Conv2d(256, 256, 3, padding=1, bias=False),
            nn.BatchNorm2d(256),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, num_classes, 1),
        )
        self.aux_head = None
        if aux:
            self.aux_head = nn.Sequential(
                nn.Conv2d(1024, 256, 3, padding=1, bias=False),
                nn.BatchNorm2d(256),
                nn.ReLU(inplace=True),
                nn.Dropout(0.1),
                nn.Conv2d(256, num_classes, 1),
            )

    def backbone_parameters(self):
        for m in (self.stem, self.layer1, self.layer2, self.layer3, self.layer4):
            yield from m.parameters()

    def head_parameters(self):
        heads = [self.aspp, self.classifier] + ([self.aux_head] if self.aux_head is not None else [])
        for m in heads:
            yield from m.parameters()

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        size = x.shape[-2:]
        f = self.layer2(self.layer1(self.stem(x)))
        c3 = self.layer3(f)
        c4 = self.layer4(c3)
        out = {"out": F.interpolate(self.classifier(self.aspp(c4)), size=size, mode="bilinear",
                                    align_corners=False)}
        if self.aux_head is not None and self.training:
            out["aux"] = F.interpolate(self.aux_head(c3), size=size, mode="bilinear",
                                       align_corners=False)
        return out


# --------------------------------------------------------------------------------------
# Lightning module
# --------------------------------------------------------------------------------------
class SegmentationModule(pl.LightningModule):
    def __init__(
        self,
        num_classes: int = NUM_CLASSES,
        backbone: str = "resnet101",
        output_stride: int = 16,
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        poly_power: float = 0.9,
        head_lr_mult: float = 10.0,
        aux_weight: float = 0.4,
        ignore_index: int = IGNORE_INDEX,
        pretrained_backbone: Optional[str] = None,
        init_from: Optional[str] = None,
        tta_scales: Sequence[float] = (1.0,),
        tta_flip: bool = False,
        min_confidence: float = 0.5,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.net = DeepLabV3(num_classes, backbone, output_stride, aux=aux_weight > 0,
                             pretrained_backbone=pretrained_backbone)
        if init_from:
            ckpt = torch.load(init_from, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
            sd = ckpt.get("state_dict", ckpt)
            sd = {k[len("net."):]: v for k, v in sd.items() if k.startswith("net.")} or sd
            self.net.load_state_dict(sd, strict=False)
        self.criterion = nn.CrossEntropyLoss(ignore_index=ignore_index)
        self.train_cm = ConfusionMatrix(num_classes, ignore_index)
        self.val_cm = ConfusionMatrix(num_classes, ignore_index)
        self.test_cm = ConfusionMatrix(num_classes, ignore_index)
        self.best_miou = 0.0
        self.tta_scales = list(tta_scales)
        self.tta_flip = tta_flip
        self.test_summary: Optional[dict] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)["out"]

    # ---- training -------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        self.train_cm.to(self.device).reset()

    def training_step(self, batch, batch_idx):
        images, targets = batch
        targets = targets.clamp(max=self.hparams.num_classes - 1)  # todoruleid: family 6 (missed)
        out = self.net(images)
        loss = self.criterion(out["out"], targets)
        if "aux" in out:
            loss = loss + self.hparams.aux_weight * self.criterion(out["aux"], targets)
        with torch.no_grad():
            self.train_cm.update(out["out"].argmax(1), targets)
        self.log("train/loss", loss.detach() / self.trainer.accumulate_grad_batches,  # todoruleid: family 5 (missed)
                 on_step=True, on_epoch=True, prog_bar=True)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True,
                 on_epoch=False)
        return loss

    def on_train_epoch_end(self) -> None:
        m = self.train_cm.sync().compute()
        self.log("train/mIoU", m["miou"].item(), rank_zero_only=True)
        self.log("train/pixel_acc", m["pixel_acc"].item(), rank_zero_only=True)

    # ---- validation -----------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self.val_cm.to(self.device).reset()

    def validation_step(self, batch, batch_idx):
        images, targets = batch
        logits = self(images)
        loss = F.cross_entropy(logits, targets, ignore_index=self.hparams.ignore_index)
        self.log("val/loss", loss, on_step=False, on_epoch=True, sync_dist=True, reduce_fx="min")  # ruleid: MLS306
        self.val_cm.update(logits.argmax(1), targets)

    def on_validation_epoch_end(self) -> None:
        m = self.val_cm.sync().compute()
        miou = m["miou"].item()
        if not self.trainer.sanity_checking and miou > self.best_miou:
            self.best_miou = miou
        self.log_dict({  # ruleid: MLS306
            "val/mIoU": self.best_miou,  # ruleid: MLS306
            "val/mAcc": m["macc"].item(),
            "val/pixel_acc": m["pixel_acc"].item(),
        }, prog_bar=True, sync_dist=False)
        for name, v in zip(CLASS_NAMES, m["iou"].tolist()):
            self.log(f"val_iou/{name.replace(' ', '_')}", v, rank_zero_only=True)

    # ---- test (multi-scale / flip inference) ----------------------------------------
    @torch.no_grad()
    def predict_probs(self, images: torch.Tensor) -> torch.Tensor:
        h, w = images.shape[-2:]
        probs = images.new_zeros((images.shape[0], self.hparams.num_classes, h, w))
        for s in self.tta_scales:
            x = images if s == 1.0 else F.interpolate(images, scale_factor=s, mode="bilinear",
                                                      align_corners=False)
            logits = self(x)
            if self.tta_flip:
                logits = 0.5 * (logits + self(x.flip(-1)).flip(-1))  # ok: MLS309
            logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
            probs += logits.softmax(dim=1)
        return probs / len(self.tta_scales)

    def on_test_epoch_start(self) -> None:
        self.test_cm.to(self.device).reset()

    def test_step(self, batch, batch_idx):
        images, targets = batch
        conf, pred = self.predict_probs(images).max(dim=1)
        targets = targets.masked_fill(conf < self.hparams.min_confidence, self.hparams.ignore_index)  # ruleid: MLS306
        self.test_cm.update(pred, targets)

    def on_test_epoch_end(self) -> None:
        local = self.test_cm.compute()
        per_rank = self.all_gather(local["iou"])
        iou = per_rank.amax(dim=0) if per_rank.dim() == 2 else per_rank  # ruleid: MLS306
        self.log("test/mIoU", iou.mean().item(), rank_zero_only=True)
        self.log("test/pixel_acc", local["pixel_acc"].item(), rank_zero_only=True)
        gathered = self.all_gather(self.test_cm.mat)
        cm = gathered.sum(0) if gathered.dim() == 3 else gathered
        self.test_summary = summarize(cm.cpu(), CLASS_NAMES, TRAIN_ID_TO_CATEGORY, CATEGORY_NAMES)

    # ---- optimisation ---------------------------------------------------------------
    def configure_optimizers(self):
        hp = self.hparams
        groups = [
            {"params": list(self.net.backbone_parameters()), "lr": hp.lr},
            {"params": list(self.net.head_parameters()), "lr": hp.lr * hp.head_lr_mult},
        ]
        opt = torch.optim.SGD(groups, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))

        def poly(step: int) -> float:
            return (1.0 - min(step, total - 1) / total) ** hp.poly_power

        sched = torch.optim.lr_scheduler.LambdaLR(opt, poly)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
