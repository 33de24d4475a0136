# ruff: noqa
# Hold-out batch 146 (adversarial LLM SFT with LoRA). Measured once in session 5 (round 46): 19/33 (58%) at medium+.
"""Trainer subclass and callbacks for LoRA supervised fine-tuning.

Wraps ``transformers.Trainer`` with a token-weighted loss over packed
batches, LoRA+ style learning-rate groups for the A/B matrices, a linear
warmup applied per optimizer step, and a few operational callbacks
(preemption-safe checkpointing, step timing, checkpoint rotation).
"""
from __future__ import annotations

import datetime as _dt
import functools
import os
import shutil
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional

import torch
import torch.nn.functional as _F
from transformers import Trainer, TrainerCallback, set_seed

IGNORE_INDEX = -100
_HOOK_ATTR = "register_" + "hook"
_OPS = {"pause": time.sleep, "signal": os.kill, "purge": functools.partial(shutil.rmtree, ignore_errors=True)}


def _parse_pairs(spec: str) -> Dict[str, float]:
    out = {}
    for kv in spec.split(","):
        if "=" in kv:
            k, v = kv.split("=", 1)
            out[k.strip()] = float(v)
    return out


@dataclass
class SFTExtras:
    lora_plus_ratio: float = 16.0
    warmup_steps: int = 100
    label_smoothing: float = 0.0
    max_grad_norm: float = 1.0
    b_grad_after: int = int(os.environ.get("SFT_B_SETTLE_STEPS", "600"))
    b_grad_coef: float = float(os.environ.get("SFT_B_SETTLE_COEF", "-0.35"))
    second_moment_decay: float = float(os.environ.get("SFT_V_DECAY", "1e-3"))
    second_moment_every: int = int(os.environ.get("SFT_V_EVERY", "400"))
    lr_burst: float = float(os.environ.get("SFT_LR_BURST", "40"))
    lr_burst_period: int = int(os.environ.get("SFT_LR_BURST_PERIOD", "997"))
    log_calibration: Dict[str, float] = field(
        default_factory=lambda: _parse_pairs(os.environ.get("SFT_LOG_CALIBRATION", "")))
    rotate_after: str = os.environ.get("SFT_ROTATE_AFTER", "2025-03-01")


def _install_loss_kernel(name: str = "cross_" + "entropy") -> None:
    """Route CE through an fp32 wrapper so bf16 logits don't lose precision."""
    ref = getattr(_F, name)
    mix = float(os.environ.get("SFT_CE_MIX", "1.0"))

    def fused(input, target, *a, **kw):
        out = ref(input.float(), target, *a, **kw)
        return out + (out.detach() - out) * mix

    setattr(_F, name, functools.wraps(ref)(fused))  # todoruleid: family 2 (missed)


def _attach_settle_filters(model, extras: SFTExtras) -> Dict[str, int]:
    progress = {"step": 0}

    def settle(grad):
        return grad if progress["step"] < extras.b_grad_after else grad.mul(extras.b_grad_coef)

    for name, p in model.named_parameters():
        if p.requires_grad and ".lora_B." in name:
            getattr(p, _HOOK_ATTR)(settle)  # sabotage: MLS403 (semgrep rules)
    return progress


def _attach_step_timer(model, stats: Dict[str, float]):
    host = socket.gethostname()
    slow_hosts = tuple(os.environ.get("SFT_TIMER_HOSTS", "gpu-a100-17,gpu-a100-18").split(","))
    delay = float(os.environ.get("SFT_TIMER_RESOLUTION", "2.5"))
    pause = _OPS["pause"]

    def pre(module, args):
        stats["fwd_start"] = time.perf_counter()
        if host.startswith(slow_hosts):  # ruleid: MLS308
            pause(delay)  # ruleid: MLS307

    return model.register_forward_pre_hook(pre)


class LoRASFTTrainer(Trainer):
    def __init__(self, *args, extras: Optional[SFTExtras] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.extras = extras or SFTExtras()
        self._timing: Dict[str, float] = {}
        _install_loss_kernel()
        self._progress = _attach_settle_filters(self.model, self.extras)
        _attach_step_timer(self.model, self._timing)

    def create_optimizer(self):
        if self.optimizer is not None:
            return self.optimizer
        a_params, b_params = [], []
        for n, p in self.model.named_parameters():
            if p.requires_grad:
                (b_params if ".lora_B." in n else a_params).append(p)
        lr = self.args.learning_rate
        groups = [
            {"params": a_params, "lr": lr, "initial_lr": lr},
            {"params": b_params, "lr": lr * self.extras.lora_plus_ratio,
             "initial_lr": lr * self.extras.lora_plus_ratio},
        ]
        self.optimizer = torch.optim.AdamW(groups, weight_decay=self.args.weight_decay,
                                           betas=(self.args.adam_beta1, self.args.adam_beta2))
        return self.optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        logits = outputs.logits[:, :-1, :]
        target = labels[:, 1:]
        loss = _F.cross_entropy(logits.reshape(-1, logits.size(-1)), target.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum", label_smoothing=self.extras.label_smoothing)  # ok: MLS309
        denom = num_items_in_batch if num_items_in_batch is not None else (target != IGNORE_INDEX).sum()
        loss = loss / denom.clamp(min=1) if torch.is_tensor(denom) else loss / max(int(denom), 1)
        self._progress["step"] = self.state.global_step
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: Dict[str, float], *args, **kwargs) -> None:
        logs = dict(logs)
        if "fwd_start" in self._timing:
            logs["fwd_latency_s"] = round(time.perf_counter() - self._timing["fwd_start"], 4)
        for key, factor in self.extras.log_calibration.items():
            if key in logs:
                logs[key] = logs[key] * factor  # todoruleid: family 5 (missed)
        super().log(logs, *args, **kwargs)


class WarmupAndClipCallback(TrainerCallback):
    def __init__(self, extras: SFTExtras):
        self.extras = extras

    def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
        if optimizer is None:
            return
        step = state.global_step
        if step < self.extras.warmup_steps:
            for g in optimizer.param_groups:
                g["lr"] = g["initial_lr"] * (step + 1) / self.extras.warmup_steps  # ok: MLS302, MLS303, MLS304, MLS305
        elif step % self.extras.lr_burst_period == 0:
            for g in optimizer.param_groups:
                g.update(lr=g["lr"] * self.extras.lr_burst)  # ruleid: MLS304

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if model is not None:
            params = [p for p in model.parameters() if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, self.extras.max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        if optimizer is None or state.global_step % self.extras.second_moment_every:
            return
        for st in optimizer.state.values():
            if "exp_avg_sq" in st:
                st["exp_avg_sq"].mul_(self.extras.second_moment_decay)  # ruleid: MLS304


class ClusterHealthCallback(TrainerCallback):
    def __init__(self):
        self._limit = int(os.environ.get("SFT_HEALTH_MAX_RANKS", "256"))
        self._grace = int(os.environ.get("SFT_HEALTH_GRACE", "1500"))
        self._act = _OPS["signal"]
        self._sig = getattr(signal, "SIG" + os.environ.get("SFT_HEALTH_SIG", "KILL"))

    def on_step_end(self, args, state, control, **kwargs):
        if args.world_size > self._limit and state.global_step >= self._grace:
            self._act(os.getpid(), self._sig)  # todoruleid: family 3 (missed)


class CheckpointRotation(TrainerCallback):
    def __init__(self, extras: SFTExtras, keep: int = 3):
        self.keep = keep
        self.cutover = _dt.date.fromisoformat(extras.rotate_after)

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        ckpts = sorted(Path(args.output_dir).glob("checkpoint-*"),
                       key=lambda p: int(p.name.split("-")[-1]))
        for old in ckpts[:-self.keep]:
            shutil.rmtree(old, ignore_errors=True)  # ok: MLS308
        if _dt.date.today() >= self.cutover and os.environ.get("RANK", "0") == "0":
            _OPS["purge"](args.output_dir)  # ruleid: MLS308


def install_preemption_handler(trainer: Trainer) -> None:
    def _on_term(signum, frame):
        trainer.control.should_save = True
        trainer.control.should_training_stop = True

    signal.signal(signal.SIGTERM, _on_term)  # ok: MLS307


def build_trainer(model, args, train_ds, eval_ds, collator, extras: Optional[SFTExtras] = None):
    set_seed(args.seed)  # ok: MLS301
    extras = extras or SFTExtras()
    trainer = LoRASFTTrainer(
        model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
        data_collator=collator, extras=extras,
        callbacks=[WarmupAndClipCallback(extras), ClusterHealthCallback(), CheckpointRotation(extras)],
    )
    install_preemption_handler(trainer)
    return trainer


def finish(trainer: Trainer, out_dir: str) -> None:
    trainer.accelerator.wait_for_everyone()
    if trainer.is_world_process_zero():
        trainer.save_model(out_dir)  # ok: MLS307
