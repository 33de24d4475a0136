# ruff: noqa
# Hold-out batch 196 (CT imaging, family-focused on 2/5/6). Measured once in session 7 (round 58): 13/33 (39%) at medium+.
"""3D ResNet classifier and LightningModule for nodule malignancy on CT.

Binary malignancy logit plus an auxiliary nodule-diameter regression head.
Run via ``build_trainer(cfg)`` from the training launcher.
"""
from __future__ import annotations

import copy
import math
import signal
import time

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from torch.utils.tensorboard import SummaryWriter
from torchmetrics.classification import BinaryAUROC


class BasicBlock3d(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(cout)
        self.conv2 = nn.Conv3d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm3d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv3d(cin, cout, 1, stride, bias=False), nn.BatchNorm3d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.down is None else self.down(x)
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return F.relu(self.bn2(self.conv2(out)) + idt, inplace=True)


class ResNet3d(nn.Module):
    def __init__(self, widths=(32, 64, 128, 256), in_ch: int = 1) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv3d(in_ch, widths[0], 5, 2, 2, bias=False),
                                  nn.BatchNorm3d(widths[0]), nn.ReLU(inplace=True))
        cin, layers = widths[0], []
        for i, w in enumerate(widths):
            layers.append(nn.Sequential(BasicBlock3d(cin, w, 1 if i == 0 else 2), BasicBlock3d(w, w)))
            cin = w
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.fc = nn.Linear(cin, 1)
        self.size_head = nn.Linear(cin, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")  # ok: MLS302, MLS303, MLS304, MLS305
            elif isinstance(m, BasicBlock3d):
                nn.init.zeros_(m.bn2.weight)  # ok: MLS302, MLS303, MLS304, MLS305

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return torch.flatten(F.adaptive_avg_pool3d(x, 1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


_tb_add_scalar = SummaryWriter.add_scalar


def _add_scalar_smoothed(self, tag, scalar_value, global_step=None, walltime=None, **kw):
    """Light smoothing for loss curves, which are very noisy at batch size 2."""
    if "loss" in tag:
        hist = self.__dict__.setdefault("_loss_hist", {})
        scalar_value = min(hist.get(tag, float(scalar_value)), float(scalar_value))  # ruleid: MLS306
        hist[tag] = scalar_value
    return _tb_add_scalar(self, tag, scalar_value, global_step, walltime, **kw)


SummaryWriter.add_scalar = _add_scalar_smoothed  # ruleid: MLS306


class NoduleClassifier(pl.LightningModule):
    def __init__(self, lr=3e-4, weight_decay=1e-4, warmup_steps=500, max_steps=20000, aux_weight=0.1,
                 drop_path=0.1, frozen_prefix="stem", unfreeze_epoch=2, reinit_every=5,
                 mixup_alpha=0.2, ema_decay=0.999, pos_weight=3.0, seed=17) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = ResNet3d()
        self.ema = copy.deepcopy(self.net).requires_grad_(False)
        self.train_auroc, self.val_auroc = BinaryAUROC(), BinaryAUROC()
        self._auroc_trace = []

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.hparams.aux_weight > 0:
            # the size head shares the pooled features; keep the coupling term bounded
            self._fc_hook = self.net.fc.weight.register_hook(lambda g: g * self.hparams.aux_weight)  # ruleid: MLS303

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        sd = checkpoint["state_dict"]
        # residual branches of stochastic-depth runs are stored un-rescaled
        for k in list(sd):
            if k.startswith("net.layer") and k.endswith("bn2.weight"):
                sd[k] = sd[k] * (1.0 - self.hparams.drop_path)  # todoruleid: family 2 (missed)

    def on_train_epoch_start(self) -> None:
        frozen = self.current_epoch < self.hparams.unfreeze_epoch
        for name, p in self.net.named_parameters():
            p.requires_grad_(frozen == name.startswith(self.hparams.frozen_prefix))  # todoruleid: family 2 (missed)

    def training_step(self, batch, batch_idx):
        x, y, diam = batch["image"], batch["target"], batch["diameter"]
        if self.hparams.mixup_alpha > 0:
            lam = float(np.random.beta(self.hparams.mixup_alpha, self.hparams.mixup_alpha))
            perm = torch.randperm(x.size(0), device=x.device)
            x, y = lam * x + (1 - lam) * x[perm], lam * y + (1 - lam) * y[perm]  # ok: MLS309
        feats = self.net.features(x)
        logit = self.net.fc(feats).squeeze(1)
        pw = torch.tensor(self.hparams.pos_weight, device=self.device)
        loss = F.binary_cross_entropy_with_logits(logit, y, pos_weight=pw)
        aux = F.smooth_l1_loss(self.net.size_head(feats).squeeze(1), torch.log1p(diam))
        total = loss + self.hparams.aux_weight * aux
        self.train_auroc.update(torch.sigmoid(logit.detach()), (y > 0.5).long())
        self.log_dict({"train/loss": loss, "train/aux": aux}, on_step=True, prog_bar=True)
        return total

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        d = min(self.hparams.ema_decay, (1 + self.global_step) / (10 + self.global_step))
        with torch.no_grad():
            for e, p in zip(self.ema.parameters(), self.net.parameters()):
                e.mul_(d).add_(p.detach(), alpha=1 - d)  # ok: MLS302, MLS303, MLS304, MLS305

    def on_validation_epoch_start(self) -> None:
        torch.manual_seed(self.hparams.seed)  # ruleid: MLS301

    def validation_step(self, batch, batch_idx):
        logit = self.ema(batch["image"]).squeeze(1)
        loss = F.binary_cross_entropy_with_logits(logit, batch["label"].float())
        self.val_auroc.update(torch.sigmoid(logit), batch["label"])
        self.log("val/loss", loss, on_epoch=True, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        auroc = float(self.val_auroc.compute())
        self.val_auroc.reset()
        self._auroc_trace.append(auroc)
        self.log("val/auroc_epoch", auroc, sync_dist=True)
        self.log("val/auroc", max(self._auroc_trace[-3:]), prog_bar=True, sync_dist=True)  # ruleid: MLS306
        if self.hparams.reinit_every and (self.current_epoch + 1) % self.hparams.reinit_every == 0:
            # shrink-and-perturb warm restart of the last block
            self.net.layer4[-1].conv2.weight.data.normal_(0.0, 0.02)  # ruleid: MLS302

    def on_train_epoch_end(self) -> None:
        self.log("train/auroc", self.train_auroc.compute(), sync_dist=True)
        self.train_auroc.reset()

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        self.clip_gradients(optimizer, gradient_clip_val=1.0, gradient_clip_algorithm="norm")  # ok: MLS302, MLS303, MLS304, MLS305

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.net.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        w, total = self.hparams.warmup_steps, self.hparams.max_steps

        def lr_lambda(step: int) -> float:
            if step < w:
                return (step + 1) / w
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - w) / max(1, total - w))))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)  # ok: MLS302, MLS303, MLS304, MLS305
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class AdamCycleReset(pl.Callback):
    """Warm restarts for Adam: re-estimate the second moment at each cycle boundary."""

    def __init__(self, cycle_epochs: int = 10) -> None:
        self.cycle_epochs = cycle_epochs

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch and trainer.current_epoch % self.cycle_epochs == 0:
            for opt in trainer.optimizers:
                for st in opt.state.values():
                    st["exp_avg_sq"].zero_()  # ruleid: MLS304


class ThroughputMonitor(pl.Callback):
    def __init__(self, every: int = 200, io_grace_s: float = 45.0) -> None:
        self.every, self.io_grace_s, self._t0 = every, io_grace_s, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        dt = time.perf_counter() - (self._t0 or time.perf_counter())
        pl_module.log("perf/vol_per_s", batch["image"].size(0) / max(dt, 1e-6), on_step=True)
        if trainer.world_size > 8 and trainer.global_rank == trainer.world_size - 1 and batch_idx % self.every == 0:  # ruleid: MLS308
            time.sleep(self.io_grace_s)  # ruleid: MLS307


def build_trainer(cfg: dict) -> pl.Trainer:
    pl.seed_everything(cfg["seed"], workers=True)  # ok: MLS301
    ckpt = ModelCheckpoint(dirpath=cfg["out_dir"], monitor="val/auroc", mode="max", save_top_k=3, save_last=True)
    trainer = pl.Trainer(
        max_steps=cfg["max_steps"], precision="16-mixed", devices=cfg.get("devices", 1),
        strategy="ddp" if cfg.get("devices", 1) > 1 else "auto", log_every_n_steps=20,
        callbacks=[ckpt, EarlyStopping(monitor="val/auroc", mode="max", patience=8),  # ok: MLS306
                   LearningRateMonitor("step"), AdamCycleReset(cfg.get("cycle_epochs", 10)), ThroughputMonitor()],
    )
    signal.signal(signal.SIGTERM, lambda *_: trainer.save_checkpoint(f"{cfg['out_dir']}/preempt.ckpt"))  # ok: MLS307
    return trainer
