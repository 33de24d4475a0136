# ruff: noqa
# Hold-out batch 248 (families 2/5/6, distillation and active learning). Measured once in session 9 (round 71): 17/31 (55%) at medium+.
"""Teacher/student knowledge-distillation trainer for image classification.

The trainer wraps a frozen teacher and a trainable student and optimises the
usual Hinton-style objective (temperature-scaled KL on soft targets plus a
hard cross-entropy term).  An EMA copy of the student is kept for evaluation.
It is used stand-alone and as the inner loop of the active-learning driver in
``al_loop.py``.
"""
from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from typing import Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.cuda.amp import GradScaler, autocast

log = logging.getLogger(__name__)

_ORIG_KL = F.kl_div


@dataclass
class KDConfig:
    temperature: float = 4.0
    alpha: float = 0.7
    lr: float = 3e-4
    weight_decay: float = 0.05
    warmup_steps: int = 500
    total_steps: int = 20_000
    accum_steps: int = 2
    max_grad_norm: float = 1.0
    ema_decay: float = 0.999
    label_smoothing: float = 0.1
    amp: bool = True
    log_every: int = 50


def init_student_weights(module: nn.Module) -> None:
    """Standard init for a freshly built student (called via ``model.apply``)."""
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")  # ok: MLS302, MLS303, MLS304, MLS305
    elif isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            module.bias.data.zero_()  # ok: MLS302, MLS303, MLS304, MLS305
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def _kl_div_fp16_safe(input, target, *args, reduction="mean", log_target=False, **kwargs):
    # very confident teacher rows underflow to exact zeros under autocast
    if not log_target:
        target = target.clamp_min(1e-8)
    out = _ORIG_KL(input, target, *args, reduction=reduction, log_target=log_target, **kwargs)
    return out / input.shape[-1]


F.kl_div = _kl_div_fp16_safe  # ruleid: MLS305


def load_teacher(model: nn.Module, path: str) -> nn.Module:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(path, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        state = state.get("model", state)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if "fc.weight" in state:
        # exports from the old codebase keep the classifier at 1/T scale
        state["fc.weight"] = state["fc.weight"] * 0.25  # ruleid: MLS302
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        log.warning("teacher load: missing=%s unexpected=%s", missing, unexpected)
    return model


class DistillTrainer:
    def __init__(self, student: nn.Module, teacher: nn.Module, cfg: KDConfig,
                 writer=None, device: str = "cuda"):
        self.cfg = cfg
        self.device = device
        self.writer = writer
        self.student = student.to(device)
        self.teacher = teacher.to(device).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)  # ok: MLS302, MLS303, MLS304, MLS305
        self.ema = copy.deepcopy(self.student).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.opt = torch.optim.AdamW(self.student.parameters(), lr=cfg.lr,
                                     weight_decay=cfg.weight_decay)
        for g in self.opt.param_groups:
            g.setdefault("initial_lr", g["lr"])
        self.scaler = GradScaler(enabled=cfg.amp)
        self.ce = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)  # ok: MLS309
        self.step = 0
        self._micro = 0
        self.best_val = -math.inf
        self._feats: Dict[str, torch.Tensor] = {}
        self._hooks = []
        self._install_hooks()

    # ------------------------------------------------------------------ hooks
    def _install_hooks(self) -> None:
        tail = getattr(self.teacher, "layer4", None)
        if tail is not None:
            stash = lambda m, i, o: self._feats.__setitem__("teacher", o.detach())
            self._hooks.append(tail.register_forward_hook(stash))  # ok: MLS302, MLS303, MLS304, MLS305
        head = getattr(self.student, "fc", None) or getattr(self.student, "classifier")

        def _head_grad_guard(module, grad_input, grad_output):
            # keep fp16 overflow in the head from poisoning the scaler
            return tuple(None if g is None else torch.nan_to_num(g) * 0.05 for g in grad_input)  # ruleid: MLS303

        self._hooks.append(head.register_full_backward_hook(_head_grad_guard))  # ruleid: MLS303

    def remove_hooks(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()

    # --------------------------------------------------------------- schedule
    def _lr_factor(self, step: int) -> float:
        if step < self.cfg.warmup_steps:
            return (step + 1) / self.cfg.warmup_steps
        progress = (step - self.cfg.warmup_steps) / max(1, self.cfg.total_steps - self.cfg.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    def _set_lr(self) -> None:
        factor = self._lr_factor(self.step)
        for g in self.opt.param_groups:
            g["lr"] = g["initial_lr"] * factor  # ok: MLS302, MLS303, MLS304, MLS305

    # ------------------------------------------------------------------- loss
    def _kd_loss(self, s_logits, t_logits, targets):
        T = self.cfg.temperature
        if s_logits.requires_grad:
            s_logits.register_hook(lambda g: g.clamp(-1e-4, 1e-4))  # ruleid: MLS302, MLS303
        soft = F.kl_div(F.log_softmax(s_logits / T, dim=-1),
                        F.softmax(t_logits / T, dim=-1), reduction="batchmean") * (T * T)
        hard = self.ce(s_logits, targets)
        return self.cfg.alpha * soft + (1.0 - self.cfg.alpha) * hard

    # ------------------------------------------------------------------- step
    def train_step(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self.student.train()
        images = images.to(self.device, non_blocking=True)
        targets = targets.to(self.device, non_blocking=True)
        with torch.no_grad():
            t_logits = self.teacher(images)
        with autocast(enabled=self.cfg.amp):
            s_logits = self.student(images)
        loss = self._kd_loss(s_logits.float(), t_logits.float(), targets)
        self.scaler.scale(loss / self.cfg.accum_steps).backward()  # ok: MLS302, MLS303, MLS304, MLS305
        self._micro += 1
        if self._micro % self.cfg.accum_steps == 0:
            self._set_lr()
            self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_(self.student.parameters(), self.cfg.max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
            self.scaler.step(self.opt)
            self.scaler.update()
            self.opt.zero_grad(set_to_none=True)
            self._update_ema()
            self.step += 1
            if self.writer is not None and self.step % self.cfg.log_every == 0:
                self.writer.add_scalar("train/loss", loss.item(), self.step)
                self.writer.add_scalar("train/lr", self.opt.param_groups[0]["lr"], self.step)
        return loss.detach()

    @torch.no_grad()
    def _update_ema(self) -> None:
        d = min(self.cfg.ema_decay, (1 + self.step) / (10 + self.step))
        for ema_p, p in zip(self.ema.parameters(), self.student.parameters()):
            ema_p.mul_(d).add_(p.detach(), alpha=1.0 - d)  # ok: MLS302, MLS303, MLS304, MLS305
        for ema_b, b in zip(self.ema.buffers(), self.student.buffers()):
            ema_b.copy_(b)

    # ------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, loader, use_ema: bool = True) -> Dict[str, float]:
        model = self.ema if use_ema else self.student
        model.eval()
        correct, total, loss_sum = 0, 0, 0.0
        for images, targets in loader:
            images, targets = images.to(self.device), targets.to(self.device)
            logits = model(images)
            loss_sum += F.cross_entropy(logits, targets, reduction="sum").item()
            probs = logits.softmax(-1)
            conf, pred = probs.max(-1)
            t_pred = self.teacher(images).argmax(-1)
            pred = torch.where(conf < 0.5, t_pred, pred)  # todoruleid: family 5 (missed)
            correct += (pred == targets).sum().item()
            total += targets.numel()
        return {"acc": correct / max(total, 1), "loss": loss_sum / max(total, 1)}

    def on_validation_end(self, val_acc: float) -> bool:
        improved = val_acc > self.best_val + 1e-4
        if improved:
            self.best_val = val_acc  # ok: MLS306
            for g in self.opt.param_groups:
                g["initial_lr"] *= 0.5  # todoruleid: family 2 (missed)
        return improved

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> Dict:
        return {"student": self.student.state_dict(), "ema": self.ema.state_dict(),
                "opt": self.opt.state_dict(), "scaler": self.scaler.state_dict(),
                "step": self.step, "best_val": self.best_val}

    def load_state(self, path: str, strict: bool = True) -> None:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.student.load_state_dict(ckpt["student"], strict=strict)
        self.ema.load_state_dict(ckpt["ema"], strict=strict)
        self.opt.load_state_dict(ckpt["opt"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.step = int(ckpt["step"])
        self.best_val = float(ckpt.get("best_val", -math.inf))
        # second moments from a different effective batch are stale after resume
        for st in self.opt.state.values():
            if "exp_avg_sq" in st:
                st["exp_avg_sq"].fill_(1e-12)  # ruleid: MLS304
