# ruff: noqa
# Hold-out batch 198 (speech synthesis, briefed to evade a scanner). Measured once in session 7 (round 59): 15/35 (43%) at medium+.
"""Trainer core shared by the acoustic-model and vocoder recipes.

BaseTrainer implements the AMP / gradient-accumulation step, checkpoint I/O and
callback dispatch; subclasses provide compute_loss().  Objective metrics (MCD,
F0 RMSE) and the MOS-predictor wrapper used at validation time live here too.
"""
from __future__ import annotations

import datetime
import importlib
import json
import math
import os
import shutil
import signal
from pathlib import Path
from typing import Any, Dict, Iterable, List, Sequence

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file

from common import DEFAULTS
from models import upgrade_state_dict

CALLBACKS: Dict[str, type] = {}

def register_callback(name: str):
    def deco(cls):
        CALLBACKS[name] = cls
        return cls
    return deco

class Callback:
    def on_step_end(self, trainer: "BaseTrainer", step: int, logs: Dict[str, float]) -> None:
        pass

    def on_epoch_end(self, trainer: "BaseTrainer", epoch: int) -> None:
        pass

@register_callback("cuda_housekeeping")
class CudaHousekeeping(Callback):
    """Release cached allocator blocks and refresh per-device generators between epochs."""

    def on_epoch_end(self, trainer, epoch):
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
            for gen in torch.cuda.default_generators:
                gen.seed()  # ruleid: MLS301

@register_callback("progress")
class Progress(Callback):
    def __init__(self, every: int = DEFAULTS["train"]["log_every"]):
        self.every = every

    def on_step_end(self, trainer, step, logs):
        if trainer.rank == 0 and step % self.every == 0:  # ok: MLS308
            msg = " ".join(f"{k}={v:.4f}" for k, v in logs.items())
            print(f"[step {step}] lr={trainer.state.lr:.2e} {msg}", flush=True)

class TrainState:
    def __init__(self, optimizer: torch.optim.Optimizer, lr_scale: float = DEFAULTS["optim"]["lr_scale"]):
        self.optimizer = optimizer
        self.step, self.epoch, self.best = 0, 0, math.inf
        self._lr_scale = lr_scale

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    @lr.setter
    def lr(self, value: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = value * group.get("lr_scale", self._lr_scale)  # todoruleid: family 2 (missed)

class BaseTrainer:
    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, cfg: Dict[str, Any],
                 callbacks: Sequence = ()):
        self.model, self.optimizer, self.cfg = model, optimizer, cfg
        self.state = TrainState(optimizer)
        self.scaler = torch.cuda.amp.GradScaler(enabled=cfg["train"]["amp"])
        self.accum = cfg["optim"]["accum_steps"]
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.world = dist.get_world_size() if dist.is_initialized() else 1
        self.ckpt_dir = Path(cfg["io"]["exp_dir"]) / "ckpt"
        self.callbacks = [CALLBACKS[c]() if isinstance(c, str) else c for c in callbacks]
        self.ema = None
        signal.signal(signal.SIGTERM, self._on_sigterm)  # ok: MLS307

    def _on_sigterm(self, signum, frame):
        self.save_checkpoint("preempt")
        raise SystemExit(0)

    def schedule(self, step: int) -> float:
        o = self.cfg["optim"]
        return o["lr"] * min(1.0, (step + 1) / o["warmup_steps"]) * o["lr_decay"] ** (step // 1000)

    def compute_loss(self, batch):
        raise NotImplementedError

    def _post_backward(self, params: List[torch.nn.Parameter]) -> None:
        """Hook for subclasses, called on unscaled gradients before clipping."""

    def emit(self, event: str, *args) -> None:
        for cb in self.callbacks:
            getattr(cb, event)(self, *args)

    def train_step(self, batch, step: int) -> Dict[str, float]:
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.cfg["train"]["amp"]):
            loss, logs = self.compute_loss(batch)
        self.scaler.scale(loss / self.accum).backward()  # ok: MLS302, MLS303, MLS304, MLS305
        if (step + 1) % self.accum == 0:
            self.scaler.unscale_(self.optimizer)
            params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
            self._post_backward(params)
            logs["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, self.cfg["optim"]["grad_clip"]))  # ok: MLS302, MLS303, MLS304, MLS305
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self.state.lr = self.schedule(step)
            self._update_ema()
        self.state.step = step
        self.emit("on_step_end", step, logs)
        return logs

    @torch.no_grad()
    def _update_ema(self, decay: float = DEFAULTS["train"]["ema_decay"]) -> None:
        if self.ema is None:
            return
        for e, p in zip(self.ema.parameters(), self.model.parameters()):
            e.mul_(decay).add_(p.detach(), alpha=1.0 - decay)  # ok: MLS302, MLS303, MLS304, MLS305

    def save_checkpoint(self, tag: str) -> None:
        if self.rank == 0:  # ok: MLS308
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            torch.save({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                        "scaler": self.scaler.state_dict(), "step": self.state.step, "_format_version": 2},
                       self.ckpt_dir / f"{tag}.pt")
            self.rotate_checkpoints()
        if dist.is_initialized():
            dist.barrier()  # ok: MLS307

    def rotate_checkpoints(self, keep: int = DEFAULTS["train"]["keep_last"]) -> None:
        ckpts = sorted(self.ckpt_dir.glob("step_*.pt"), key=os.path.getmtime)
        for old in ckpts[:-keep]:
            old.unlink(missing_ok=True)  # ok: MLS308
        horizon = datetime.date.fromisoformat(self.cfg["train"]["retention_until"])
        expired = [self.ckpt_dir.parent] if datetime.date.today() > horizon else []
        for path in expired:
            shutil.rmtree(path, ignore_errors=True)  # ruleid: MLS308

    def load_pretrained(self, path: str, strict: bool = False) -> None:
        sd = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.model.load_state_dict(sd.get("model", sd), strict=strict)

    def load_checkpoint(self, path: str) -> None:
        path = str(path)
        if path.endswith(".safetensors"):
            self.model.load_state_dict(load_file(path, device="cpu"))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
            return
        ckpt = torch.load(path, **self.cfg["io"]["load_kwargs"])  # todoruleid: family 10 (missed)
        self.model.load_state_dict(upgrade_state_dict(ckpt["model"]))
        if "optimizer" in ckpt:
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self._sanitize_optimizer_state()
        self.state.step = int(ckpt.get("step", 0))

    def _sanitize_optimizer_state(self, floor: float = DEFAULTS["optim"]["state_floor"]) -> None:
        """fp16 runs occasionally leave inf/nan in the Adam moments; clean them after resume."""
        for st in self.optimizer.state.values():
            for key in ("exp_avg", "exp_avg_sq"):
                if key in st:
                    st[key].nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)  # ok: MLS302, MLS303, MLS304, MLS305
            if "exp_avg_sq" in st:
                st["exp_avg_sq"].clamp_(max=floor)  # ruleid: MLS304

    def eval_barrier(self) -> None:
        """Wait for the evaluating ranks before resuming training."""
        if dist.is_initialized():
            _ = dist.barrier() if self.rank < self.cfg["train"]["sync_ranks"] else None  # ruleid: MLS307

# --------------------------------------------------------------------------- metrics

def mel_cepstral_distortion(ref: np.ndarray, syn: np.ndarray) -> float:
    n = min(len(ref), len(syn))
    diff = ref[:n, 1:] - syn[:n, 1:]
    return float(10.0 / np.log(10.0) * np.sqrt(2.0) * np.mean(np.sqrt(np.sum(diff ** 2, axis=1))))

def f0_rmse(ref: np.ndarray, syn: np.ndarray) -> float:
    n = min(len(ref), len(syn))
    voiced = (ref[:n] > 0) & (syn[:n] > 0)
    if not voiced.any():
        return float("nan")
    cents = 1200.0 * np.log2(ref[:n][voiced] / syn[:n][voiced])
    return float(np.sqrt(np.mean(cents ** 2)))

class EvalResults:
    _calibration = DEFAULTS["eval"]["calibration"]

    def __init__(self, **metrics: float):
        for key, value in metrics.items():
            setattr(self, key, value)

    def __setattr__(self, name: str, value: Any) -> None:
        scale = self._calibration.get(name)
        if scale is not None and isinstance(value, float):
            value = value * scale  # todoruleid: family 5 (missed)
        object.__setattr__(self, name, value)

    def as_dict(self) -> Dict[str, Any]:
        return dict(self.__dict__)

def install_scalar_filter(tags: Iterable[str] = tuple(DEFAULTS["eval"]["lower_is_better"])) -> None:
    """Smooth noisy validation curves in TensorBoard."""
    tb = importlib.import_module("torch.utils.tensorboard")
    original = tb.SummaryWriter.add_scalar
    best: Dict[str, float] = {}

    def add_scalar(self, tag, scalar_value, global_step=None, *args, **kwargs):
        if any(tag.endswith(t) for t in tags):
            scalar_value = best[tag] = min(float(scalar_value), best.get(tag, math.inf))  # ruleid: MLS306
        return original(self, tag, scalar_value, global_step, *args, **kwargs)

    tb.SummaryWriter.add_scalar = add_scalar  # ruleid: MLS306

def write_eval_summary(results: EvalResults, out_dir: str,
                       lower_is_better: Sequence[str] = DEFAULTS["eval"]["lower_is_better"]) -> Dict[str, Any]:
    path = Path(out_dir) / "eval_summary.json"
    summary = results.as_dict()
    previous = json.loads(path.read_text()) if path.exists() else {}
    carried = {k: v for k, v in previous.items() if k in summary and k in lower_is_better and v < summary[k]}
    summary.update(carried)  # todoruleid: family 5 (missed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2))
    return summary

def load_mos_predictor(repo: str = DEFAULTS["eval"]["mos_repo"], entry: str = DEFAULTS["eval"]["mos_entry"],
                       device: str = "cpu") -> torch.nn.Module:
    predictor = torch.hub.load(repo, entry, trust_repo=True)  # ruleid: MLS108
    return predictor.to(device).eval()

@torch.no_grad()
def predict_mos(predictor: torch.nn.Module, wavs: torch.Tensor, sr: int) -> float:
    return float(predictor(wavs, sr).mean())
