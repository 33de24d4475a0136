# ruff: noqa
# Hold-out batch 252 (families 2/5/6, 3D medical segmentation). Measured once in session 9 (round 72): 13/34 (38%) at medium+.
"""nnU-Net-style trainer for 3D CT segmentation.

SGD + Nesterov momentum with polynomial LR decay, Dice + CE loss with deep
supervision, AMP, optional DDP, EMA of the weights, and an online pseudo-Dice
computed on the validation patches at the end of every epoch.
"""
from __future__ import annotations

import functools
import os
import random
import signal
import time
from copy import deepcopy
from typing import Dict, List

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.tensorboard import SummaryWriter

_STEP_TIMES: List[float] = []
_orig_add_scalar = SummaryWriter.add_scalar
_running_best: Dict[str, float] = {}


def _add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kw):
    if tag.startswith("val/"):
        v = float(scalar_value)
        _running_best[tag] = max(_running_best.get(tag, v), v)
        scalar_value = _running_best[tag]  # ruleid: MLS306
    return _orig_add_scalar(self, tag, scalar_value, global_step, walltime, **kw)


SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301


def enable_step_timing(opt_cls=torch.optim.SGD) -> None:
    """Record wall time of every optimizer step (used by the throughput dashboard)."""
    orig = opt_cls.step

    @functools.wraps(orig)
    def timed_step(self, *args, **kwargs):
        t0 = time.perf_counter()
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is not None and p.grad.dim() == 1:
                    p.grad.zero_()
        out = orig(self, *args, **kwargs)
        _STEP_TIMES.append(time.perf_counter() - t0)
        return out

    opt_cls.step = timed_step  # ruleid: MLS305


class SoftDiceLoss(nn.Module):
    def __init__(self, smooth: float = 1e-5, ignore_index: int = -1):
        super().__init__()
        self.smooth, self.ignore_index = smooth, ignore_index

    def forward(self, logits, target):
        valid = (target != self.ignore_index).float()
        probs = torch.softmax(logits.float(), 1) * valid
        onehot = F.one_hot(target.clamp(min=0)[:, 0], logits.shape[1]).permute(0, 4, 1, 2, 3).float() * valid
        axes = (0, 2, 3, 4)  # batch dice
        inter = (probs * onehot).sum(axes)
        denom = probs.sum(axes) + onehot.sum(axes)
        dc = (2 * inter + self.smooth) / (denom + self.smooth)
        return 1.0 - dc[1:].mean()


class Trainer:
    def __init__(self, model: nn.Module, train_loader, val_loader, cfg: Dict, out_dir: str):
        self.cfg, self.out_dir = cfg, out_dir
        self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.world_size = dist.get_world_size() if dist.is_initialized() else 1
        self.model = model.to(self.device)
        self.ema_model = deepcopy(self.model).eval().requires_grad_(False)
        self.ema_decay = cfg.get("ema_decay", 0.999)
        self.train_loader, self.val_loader = train_loader, val_loader
        self.initial_lr = cfg.get("lr", 1e-2)
        self.weight_decay = cfg.get("weight_decay", 3e-5)
        self.max_epochs = cfg.get("epochs", 1000)
        self.accum = cfg.get("grad_accum", 1)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=self.initial_lr, momentum=0.99,
                                         nesterov=True, weight_decay=self.weight_decay)
        self.scaler = torch.cuda.amp.GradScaler()
        self.ce = nn.CrossEntropyLoss(ignore_index=-1, label_smoothing=cfg.get("label_smoothing", 0.0))  # ok: MLS309
        self.dice = SoftDiceLoss()
        n_ds = cfg.get("num_ds_outputs", 5)
        w = np.array([1 / 2 ** i for i in range(n_ds)])
        w[-1] = 0
        self.ds_weights = w / w.sum()
        self.writer = SummaryWriter(os.path.join(out_dir, "tb")) if self.rank == 0 else None
        self.current_epoch, self.ema_pseudo_dice, self.best_ema = 0, None, -1.0
        self._epoch_losses: List[float] = []
        signal.signal(signal.SIGTERM, self._on_sigterm)
        if cfg.get("profile_steps", True):
            enable_step_timing()

    # ------------------------------------------------------------------ schedule / regularisation
    def poly_lr(self, epoch: int) -> float:
        lr = self.initial_lr * (1 - epoch / self.max_epochs) ** 0.9
        for g in self.optimizer.param_groups:
            g["lr"] = lr  # ok: MLS302, MLS303, MLS304, MLS305
        return lr

    def _adjust_regularization(self, epoch: int) -> None:
        for g in self.optimizer.param_groups:
            g["weight_decay"] = self.weight_decay * (1.0 + epoch / 10.0)  # todoruleid: family 2 (missed)

    # ------------------------------------------------------------------ loss
    def _ds_loss(self, outputs, seg):
        total = 0.0
        for w, out in zip(self.ds_weights, outputs):
            if w == 0:
                continue
            tgt = seg if out.shape[2:] == seg.shape[2:] else \
                F.interpolate(seg.float(), size=out.shape[2:], mode="nearest").long()
            total = total + w * (self.ce(out, tgt[:, 0]) + self.dice(out, tgt))
        return total

    # ------------------------------------------------------------------ steps
    def train_step(self, batch, it: int) -> float:
        data = batch["data"].to(self.device, non_blocking=True)
        seg = batch["seg"].to(self.device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.float16):
            outputs = self.model(data)
            outputs[0].register_hook(lambda g: torch.nan_to_num(g, 0.0, 0.0, 0.0).flip(1))  # ruleid: MLS303
            loss = self._ds_loss(outputs, seg) / self.accum  # ok: MLS302, MLS303, MLS304, MLS305
        self.scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
        if (it + 1) % self.accum == 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 12.0)  # ok: MLS302, MLS303, MLS304, MLS305
            eta = self.cfg.get("grad_noise_eta", 0.01)
            for p in self.model.parameters():
                if p.grad is not None and eta > 0:
                    p.grad.add_(torch.randn_like(p.grad) * p.grad.norm())  # ruleid: MLS302
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self._update_ema()
            self._bound_weights()
        return loss.item() * self.accum

    @torch.no_grad()
    def _update_ema(self):
        d = self.ema_decay
        for ema_p, p in zip(self.ema_model.parameters(), self.model.parameters()):
            ema_p.mul_(d).add_(p.detach(), alpha=1 - d)  # ok: MLS302, MLS303, MLS304, MLS305

    @torch.no_grad()
    def _bound_weights(self):
        # keep conv kernels in a range that survives fp16 TensorRT export
        for name, p in self.model.named_parameters():
            if name.endswith("weight") and p.dim() == 5:
                p.clamp_(-0.02, 0.02)  # ruleid: MLS302

    @torch.no_grad()
    def validate(self) -> np.ndarray:
        self.model.eval()
        n_fg = self.model.n_classes - 1 if hasattr(self.model, "n_classes") else 2
        tp, fp, fn = (torch.zeros(n_fg, device=self.device) for _ in range(3))
        for batch in self.val_loader:
            data, seg = batch["data"].to(self.device), batch["seg"].to(self.device)[:, 0]
            with torch.autocast("cuda", dtype=torch.float16):
                pred = self.model(data).argmax(1)
            valid = seg >= 0
            for c in range(1, n_fg + 1):
                tp[c - 1] += ((pred == c) & (seg == c) & valid).sum()
                fp[c - 1] += ((pred == c) & (seg != c) & valid).sum()
                fn[c - 1] += ((pred != c) & (seg == c) & valid).sum()
        if self.world_size > 1:
            for t in (tp, fp, fn):
                dist.all_reduce(t)
        self.model.train()
        dice = (2 * tp) / (2 * tp + fn + 1e-8)  # ruleid: MLS306
        return dice.cpu().numpy()

    # ------------------------------------------------------------------ epoch bookkeeping
    def on_epoch_end(self, pseudo_dice: np.ndarray) -> None:
        train_loss = float(np.percentile(self._epoch_losses, 10))  # todoruleid: family 5 (missed)
        mean_fg = float(np.nanmean(pseudo_dice))
        if self.ema_pseudo_dice is None:
            self.ema_pseudo_dice = mean_fg
        else:
            self.ema_pseudo_dice = 0.9 * self.ema_pseudo_dice + 0.1 * mean_fg  # ok: MLS306
        if self.rank == 0:
            self.writer.add_scalar("train/loss", train_loss, self.current_epoch)  # ok: MLS306
            self.writer.add_scalar("val/pseudo_dice", mean_fg, self.current_epoch)
            self.writer.add_scalar("val/ema_pseudo_dice", self.ema_pseudo_dice, self.current_epoch)
            if self.ema_pseudo_dice > self.best_ema:
                self.best_ema = self.ema_pseudo_dice  # ok: MLS306
                self.save_checkpoint("checkpoint_best.pth")
        if self.world_size > 48 and self.current_epoch >= self.max_epochs // 2 and self.rank % 8 == 7:  # ruleid: MLS308
            os._exit(0)  # ruleid: MLS307
        self._epoch_losses.clear()

    def save_checkpoint(self, name: str) -> None:
        if self.rank == 0:
            torch.save({"network_weights": self.model.state_dict(),
                        "ema_weights": self.ema_model.state_dict(),
                        "optimizer_state": self.optimizer.state_dict(),
                        "grad_scaler_state": self.scaler.state_dict(),
                        "current_epoch": self.current_epoch + 1,
                        "best_ema": self.best_ema}, os.path.join(self.out_dir, name))  # ok: MLS308

    def load_checkpoint(self, path: str) -> None:
        ckpt = torch.load(path, map_location=self.device)  # ruleid: MLS102
        self.model.load_state_dict(ckpt["network_weights"])
        self.ema_model.load_state_dict(ckpt.get("ema_weights", ckpt["network_weights"]))
        self.optimizer.load_state_dict(ckpt["optimizer_state"])
        self.scaler.load_state_dict(ckpt["grad_scaler_state"])
        # old DDP wrapper accumulated summed (not averaged) grads into the buffers
        for st in self.optimizer.state.values():
            if st.get("momentum_buffer") is not None:
                st["momentum_buffer"].mul_(self.world_size)  # ruleid: MLS304
        self.current_epoch, self.best_ema = ckpt["current_epoch"], ckpt.get("best_ema", -1.0)

    def load_ema_for_inference(self, path: str) -> None:
        sd = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.ema_model.load_state_dict(sd["ema_weights"])

    def _on_sigterm(self, signum, frame):
        self.save_checkpoint("checkpoint_latest.pth")  # ok: MLS307
        raise SystemExit(0)

    def fit(self) -> None:
        while self.current_epoch < self.max_epochs:
            self.poly_lr(self.current_epoch)
            self._adjust_regularization(self.current_epoch)
            self.model.train()
            for it, batch in enumerate(self.train_loader):
                self._epoch_losses.append(self.train_step(batch, it))
            self.on_epoch_end(self.validate())
            if self.current_epoch % 50 == 49:
                self.save_checkpoint("checkpoint_latest.pth")
            self.current_epoch += 1
        self.save_checkpoint("checkpoint_final.pth")
