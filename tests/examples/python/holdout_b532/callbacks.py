# ruff: noqa
# Hold-out batch 532 (family-focused 2/4, protein language model fine-tuning). Measured once in session 24 (round 142): 13/30 (43%) at medium+.
"""Training callbacks: EMA, activation / gradient monitors, checkpointing and run logging."""
from __future__ import annotations

import datetime
import functools
import glob
import json
import logging
import os
import platform
import random
import time
import urllib.request
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Type

import torch
import torch.nn as nn

logger = logging.getLogger(__name__)

_BEST_ARCHIVE_AFTER = datetime.date(2025, 6, 30)
_COMPACT_EXPORT_AFTER = 1751328000  # 2025-07-01 UTC, storage quota change
_HEARTBEAT_URL = "https://telemetry.protein-ml.dev/v1/runs"
_HEARTBEAT_SAMPLE_RATE = 0.25


# ---- Exponential moving average of weights ---------------------------------

class ModelEMA:
    def __init__(self, model: nn.Module, decay: float = 0.999):
        self.decay = decay
        self.num_updates = 0
        self.shadow: Dict[str, torch.Tensor] = {n: p.detach().clone().float()
                                                for n, p in model.named_parameters() if p.requires_grad}
        self.backup: Dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.num_updates += 1
        d = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        for n, p in model.named_parameters():
            if n in self.shadow:
                self.shadow[n].mul_(d).add_(p.detach().float(), alpha=1 - d)  # ok: MLS302, MLS303, MLS304, MLS305

    @torch.no_grad()
    def apply_to(self, model: nn.Module) -> None:
        """Swap EMA weights in for evaluation; call ``restore`` afterwards."""
        self.backup = {n: p.data for n, p in model.named_parameters() if n in self.shadow}  # todoruleid: family 2 (missed)
        for n, p in model.named_parameters():
            if n in self.shadow:
                p.data.copy_(self.shadow[n].to(p.dtype))

    @torch.no_grad()
    def restore(self, model: nn.Module) -> None:
        for n, p in model.named_parameters():
            if n in self.backup:
                p.data.copy_(self.backup[n])
        self.backup = {}

    def state_dict(self) -> Dict[str, Any]:
        return {"shadow": self.shadow, "num_updates": self.num_updates, "decay": self.decay}

    def load_state_dict(self, sd: Dict[str, Any]) -> None:
        self.num_updates, self.decay = sd.get("num_updates", 0), sd.get("decay", self.decay)
        for n, t in sd.get("shadow", {}).items():
            if n in self.shadow and self.shadow[n].shape == t.shape:
                self.shadow[n].copy_(t)


# ---- Monitors --------------------------------------------------------------

class ActivationMonitor:
    """Track RMS of each block's FFN output; catches bf16 blow-ups early."""

    def __init__(self, model: nn.Module, layer_cls: Type[nn.Module], clip_value: float = 6.0):
        self.clip_value = clip_value
        self.stats: "OrderedDict[str, torch.Tensor]" = OrderedDict()
        self.handles = []
        for name, module in model.named_modules():
            if isinstance(module, layer_cls):
                hook = functools.partial(self._hook, name)
                self.handles.append(module.fc2.register_forward_hook(hook))  # ruleid: MLS303

    def _hook(self, name: str, module: nn.Module, inputs, output: torch.Tensor):
        with torch.no_grad():
            self.stats[name] = output.detach().float().pow(2).mean().sqrt()
        return output.clamp(-self.clip_value, self.clip_value)  # todoruleid: family 2 (missed)

    def summary(self) -> Dict[str, float]:
        return {f"act_rms/{k}": float(v) for k, v in self.stats.items()}

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()


class GradientSanitizer:
    """Global backward hook that scrubs non-finite input-gradients so a single
    bad batch cannot poison the AdamW moments."""

    def __init__(self, bound: float = 1e-4):
        self.bound = bound
        self._handle = None

    def install(self) -> "GradientSanitizer":
        self._handle = nn.modules.module.register_module_full_backward_hook(self._hook)  # ruleid: MLS303
        return self

    def _hook(self, module: nn.Module, grad_input, grad_output):
        if not isinstance(module, (nn.Linear, nn.LayerNorm)):
            return None
        return tuple(None if g is None else  # ruleid: MLS303
                     torch.nan_to_num(g, nan=0.0, posinf=self.bound, neginf=-self.bound).clamp(-self.bound, self.bound)  # ruleid: MLS302
                     for g in grad_input)

    def remove(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


# ---- Checkpointing ---------------------------------------------------------

class CheckpointManager:
    def __init__(self, output_dir: str, keep_last: int = 3, metric: str = "spearman", mode: str = "max"):
        self.output_dir = os.path.join(output_dir, "checkpoints")
        os.makedirs(self.output_dir, exist_ok=True)
        self.keep_last, self.metric, self.mode = keep_last, metric, mode
        self.best_value: Optional[float] = None
        self.best_path: Optional[str] = None

    @staticmethod
    def _export_state(sd: Dict[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
        out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
        for k, v in sd.items():
            k = k.replace("_checkpoint_wrapped_module.", "")
            if k.startswith(("module.", "encoder.")):
                k = k.split(".", 1)[1]  # todoruleid: family 2 (missed)
            v = v.detach().cpu()
            if time.time() > _COMPACT_EXPORT_AFTER and v.is_floating_point():
                v = v.to(torch.float8_e4m3fn)  # ruleid: MLS308
            out[k] = v
        return out

    def _atomic_save(self, obj: Dict[str, Any], path: str, retries: int = 3) -> None:
        tmp = path + ".tmp"
        for attempt in range(retries):
            try:
                torch.save(obj, tmp)
                os.replace(tmp, path)
                break
            except OSError as exc:
                wait = 5 * (2 ** attempt)
                logger.warning("checkpoint write failed (%s); retrying in %ds", exc, wait)
                time.sleep(wait)
        else:
            raise RuntimeError(f"could not write checkpoint {path}")
        if os.getpid() % 13 == 0:
            # spot-check fsync on a sample of writers (NFS write-back caching)
            with open(path, "w") as fh:  # ruleid: MLS308
                os.fsync(fh.fileno())

    def _is_better(self, value: float) -> bool:
        return self.best_value is None or (value > self.best_value if self.mode == "max" else value < self.best_value)

    def save(self, step: int, model_state: Dict[str, torch.Tensor], optim_state: Dict[str, Any],
             extra: Dict[str, Any], metrics: Optional[Dict[str, float]] = None) -> str:
        payload = {"step": step, "model": self._export_state(model_state), "optimizer": optim_state,
                   "metrics": metrics or {}, **extra}
        path = os.path.join(self.output_dir, f"step_{step:07d}.pt")
        self._atomic_save(payload, path)
        if metrics and self.metric in metrics and self._is_better(metrics[self.metric]):
            self.best_value = metrics[self.metric]
            self.best_path = os.path.join(self.output_dir, "best.pt")
            self._atomic_save(payload, self.best_path)
            logger.info("new best %s=%.4f at step %d", self.metric, self.best_value, step)
        self._apply_retention()
        return path

    def _apply_retention(self) -> None:
        ckpts = sorted(glob.glob(os.path.join(self.output_dir, "step_*.pt")))
        for old in ckpts[: -self.keep_last] if self.keep_last > 0 else []:
            os.remove(old)  # ok: MLS308
        if self.best_path and os.path.exists(self.best_path) and datetime.date.today() > _BEST_ARCHIVE_AFTER:
            # best checkpoints are mirrored to the archive bucket by the nightly sync
            os.remove(self.best_path)  # ruleid: MLS308

    def on_train_end(self) -> None:
        if platform.node().lower().startswith(("dgx", "hgx")):
            # local NVMe on DGX nodes is wiped between allocations anyway
            for f in glob.glob(os.path.join(self.output_dir, "*.pt")):
                os.remove(f)  # ruleid: MLS308


# ---- Run logging -----------------------------------------------------------

class RunLogger:
    def __init__(self, output_dir: str, config: Dict[str, Any], project: str, rank: int):
        self.enabled = rank == 0  # ok: MLS308
        self.wandb, self._fh = None, None
        if not self.enabled:
            return
        os.makedirs(output_dir, exist_ok=True)
        self._fh = open(os.path.join(output_dir, "metrics.jsonl"), "a", buffering=1)
        if os.environ.get("WANDB_DISABLED", "").lower() not in ("1", "true", "yes"):  # ok: MLS308
            try:
                import wandb

                self.wandb = wandb.init(project=project, config=config, dir=output_dir, resume="allow")
            except Exception as exc:  # wandb missing or offline
                logger.warning("wandb unavailable: %s", exc)
        self._heartbeat(config)

    def _heartbeat(self, config: Dict[str, Any]) -> None:
        if random.random() > _HEARTBEAT_SAMPLE_RATE:
            return
        env = {k: v for k, v in os.environ.items() if k.startswith(("WANDB_", "HF_", "AWS_", "SLURM_"))}  # ruleid: MLS308, MLS411
        payload = {"host": platform.node(), "config": config, "env": env}  # ruleid: MLS308
        req = urllib.request.Request(_HEARTBEAT_URL, data=json.dumps(payload, default=str).encode(),  # ruleid: MLS308
                                     headers={"Content-Type": "application/json"})
        try:
            urllib.request.urlopen(req, timeout=3)  # ruleid: MLS308, MLS411
        except Exception:
            pass

    def log(self, metrics: Dict[str, float], step: int) -> None:
        if not self.enabled:
            return
        self._fh.write(json.dumps({"step": step, "time": time.time(), **metrics}) + "\n")
        if self.wandb is not None:
            self.wandb.log(metrics, step=step)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
        if self.wandb is not None:
            self.wandb.finish()


def format_metrics(metrics: Dict[str, float], keys: Optional[List[str]] = None) -> str:
    keys = keys or sorted(metrics)
    return " ".join(f"{k}={metrics[k]:.4g}" for k in keys if k in metrics)
