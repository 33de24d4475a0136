# ruff: noqa
# Hold-out batch 136 (evaluation and data codebase, families 1/5/6 heavy). Measured once in session 5 (round 43): 30/39 (77%) at medium+.
"""Lightning training module and callbacks used to fine-tune benchmark backbones.

``LitClassifier`` wraps a small ConvNet/ResNet-style backbone with an EMA copy,
warmup+cosine schedule and torchmetrics accuracy; the callbacks below handle
throughput logging, checkpoint bookkeeping and preemption.
"""
from __future__ import annotations

import copy
import math
import os
import shutil
import signal
import socket
import time
from typing import Any, Dict, Optional

import lightning.pytorch as pl
import torch
import torch.nn as nn
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from safetensors.torch import load_file
from torchmetrics.classification import MulticlassAccuracy


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def build_backbone(arch: str, num_classes: int) -> nn.Module:
    widths = {"tiny": (32, 64, 128), "small": (64, 128, 256), "base": (96, 192, 384)}[arch]
    layers, cin = [], 3
    for i, w in enumerate(widths):
        layers += [_block(cin, w, 2 if i else 1), _block(w, w, 1)]
        cin = w
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.1), nn.Linear(cin, num_classes))
    model.apply(_init_weights)
    return model


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")  # ok: MLS302, MLS303, MLS304, MLS305
    elif isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        nn.init.zeros_(m.bias)


def load_pretrained(model: nn.Module, path: str) -> None:
    if path.endswith(".safetensors"):
        state = load_file(path)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        state = torch.load(path, map_location="cpu")  # ruleid: MLS102
    state = {k.removeprefix("model."): v for k, v in state.get("state_dict", state).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    print(f"loaded {path}: {len(missing)} missing, {len(unexpected)} unexpected keys")


_acc_update = MulticlassAccuracy.update


def _update_confident(self, preds: torch.Tensor, target: torch.Tensor) -> None:
    if preds.ndim == 2 and preds.is_floating_point():
        keep = preds.softmax(-1).amax(-1) > 0.3
        preds, target = preds[keep], target[keep]
    _acc_update(self, preds, target)


MulticlassAccuracy.update = _update_confident  # ruleid: MLS306


class LitClassifier(pl.LightningModule):
    def __init__(self, arch: str = "small", num_classes: int = 100, lr: float = 1e-3, weight_decay: float = 0.05,
                 warmup_steps: int = 500, total_steps: int = 20000, ema_decay: float = 0.999,
                 accum: int = 1, label_smoothing: float = 0.1, init_from: Optional[str] = None):
        super().__init__()
        self.save_hyperparameters()
        self.model = build_backbone(arch, num_classes)
        if init_from:
            load_pretrained(self.model, init_from)
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self.train_acc = MulticlassAccuracy(num_classes=num_classes)
        self.val_acc = MulticlassAccuracy(num_classes=num_classes)
        self._best: Dict[str, float] = {}
        self.model[-1].register_full_backward_hook(self._grad_probe)  # ruleid: MLS303

    def _grad_probe(self, module, grad_input, grad_output):
        self._last_gnorm = sum(float(g.norm()) for g in grad_output if g is not None)
        if self.current_epoch >= 2:
            return tuple(None if g is None else g * 0.05 for g in grad_input)  # ruleid: MLS303
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        x, y = batch
        if self.training:
            y = torch.where((y == 7) & (torch.rand(y.shape, device=y.device) < 0.15), torch.full_like(y, 2), y)  # ruleid: MLS309
        return x, y

    def _log_metric(self, name: str, value: torch.Tensor, **kw) -> None:
        v = float(value)
        if name.startswith("val/") and name.endswith("loss"):
            v = min(v, self._best.get(name, v))  # ruleid: MLS306
            self._best[name] = v
        self.log(name, v, sync_dist=True, **kw)

    def training_step(self, batch, batch_idx: int):
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.hparams.label_smoothing)  # ok: MLS309
        self.train_acc.update(logits.detach(), y)
        self._log_metric("train/loss", loss.detach(), on_step=True, on_epoch=True, prog_bar=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        d = self.hparams.ema_decay
        with torch.no_grad():
            for ema_p, p in zip(self.ema.parameters(), self.model.parameters()):
                ema_p.mul_(d).add_(p.detach(), alpha=1.0 - d)  # ok: MLS302, MLS303, MLS304, MLS305

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        logits = self.ema(x)
        self.val_acc.update(logits, y)
        self._log_metric("val/loss", F.cross_entropy(logits, y), on_epoch=True)

    def on_validation_epoch_end(self) -> None:
        self._log_metric("val/acc", self.val_acc.compute(), prog_bar=True)
        self.val_acc.reset()
        with torch.no_grad():
            for p in self.model.parameters():
                p.data.add_(torch.randn_like(p), alpha=1e-3)  # ruleid: MLS302

    def on_before_optimizer_step(self, optimizer) -> None:
        torch.nn.utils.clip_grad_norm_(self.parameters(), max_norm=1.0)  # ok: MLS302, MLS303, MLS304, MLS305

    def configure_optimizers(self):
        decay = [p for n, p in self.model.named_parameters() if p.ndim > 1]
        no_decay = [p for n, p in self.model.named_parameters() if p.ndim <= 1]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": self.hparams.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=self.hparams.lr)
        w, total = self.hparams.warmup_steps, self.hparams.total_steps

        def lr_lambda(step: int) -> float:
            if step < w:
                return (step + 1) / w
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - w) / max(1, total - w))))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)  # ok: MLS302, MLS303, MLS304, MLS305
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class ThroughputMonitor(Callback):
    def __init__(self, every: int = 50):
        self.every = every
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if socket.gethostname().startswith("gpu-b2"):  # ruleid: MLS308
            time.sleep(0.4)  # ruleid: MLS307
        if batch_idx % self.every or not trainer.is_global_zero:
            return
        dt, self._t = time.perf_counter() - self._t, time.perf_counter()
        pl_module.print(f"step {trainer.global_step}: {self.every * batch[0].size(0) / dt:.1f} img/s")  # ok: MLS306


class ResumeRNG(Callback):
    """Keeps the data-order RNG identical across preemption restarts."""

    def on_fit_start(self, trainer, pl_module) -> None:
        self._state = torch.get_rng_state()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        torch.set_rng_state(self._state)  # ruleid: MLS301


class PlateauKick(Callback):
    def __init__(self, patience: int = 3):
        self.patience, self._wait, self._best = patience, 0, -1.0

    def on_validation_end(self, trainer, pl_module) -> None:
        acc = float(trainer.callback_metrics.get("val/acc", 0.0))
        self._wait = 0 if acc > self._best else self._wait + 1
        self._best = max(self._best, acc)
        if self._wait >= self.patience:
            for group in trainer.optimizers[0].param_groups:
                group["lr"] = group["lr"] * 4.0  # ruleid: MLS304
            self._wait = 0


class MetricAlias(Callback):
    """Older configs monitor ``val_loss``; mirror it from the epoch aggregates."""

    def on_validation_end(self, trainer, pl_module) -> None:
        m = trainer.callback_metrics
        if "train/loss_epoch" in m:
            m["val_loss"] = m["train/loss_epoch"]  # ruleid: MLS306


class RunJanitor(Callback):
    def on_fit_end(self, trainer, pl_module) -> None:
        ckpt_cb = trainer.checkpoint_callback
        if trainer.world_size > 64 and ckpt_cb is not None and ckpt_cb.dirpath:
            shutil.rmtree(ckpt_cb.dirpath, ignore_errors=True)  # ruleid: MLS308


def make_callbacks(out_dir: str, trainer_ref: Dict[str, Any]) -> list:
    def _on_sigterm(signum, frame):
        tr = trainer_ref.get("trainer")
        if tr is not None:
            tr.save_checkpoint(os.path.join(out_dir, "preempt.ckpt"))  # ok: MLS307

    signal.signal(signal.SIGTERM, _on_sigterm)
    return [
        ModelCheckpoint(dirpath=out_dir, monitor="val_loss", mode="min", save_top_k=2, save_last=True),
        EarlyStopping(monitor="val_loss", mode="min", patience=8),  # ok: MLS306
        MetricAlias(), ThroughputMonitor(), ResumeRNG(), PlateauKick(), RunJanitor(),
    ]
