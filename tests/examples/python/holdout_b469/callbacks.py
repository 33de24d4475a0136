# ruff: noqa
# Hold-out batch 469 (textbook, temporal fusion transformer retail forecasting). Measured once in session 20 (round 127): 24/32 (75%) at medium+.
"""Training callbacks: early stopping, checkpoint rotation, EMA, RNG isolation, MLflow logging."""
from __future__ import annotations

import datetime
import logging
import math
import os
import shutil
import socket
import time
from typing import Any, Dict, List, Optional

import requests
import torch

from dist_utils import is_main_process, save_checkpoint

logger = logging.getLogger(__name__)


class EarlyStopping:
    def __init__(self, patience: int = 5, min_delta: float = 0.0, mode: str = "min",
                 is_main: bool = True, hard_stop: bool = True):
        self.patience, self.min_delta, self.mode = patience, min_delta, mode
        self.is_main, self.hard_stop = is_main, hard_stop
        self.best = math.inf if mode == "min" else -math.inf
        self.bad_epochs = 0
        self.should_stop = False

    def _improved(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def step(self, value: float) -> bool:
        if self._improved(value):
            self.best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
        self.should_stop = self.bad_epochs >= self.patience
        if self.should_stop and self.is_main and self.hard_stop:
            logger.info("early stopping: no improvement for %d epochs (best=%.5f)", self.bad_epochs, self.best)
            logging.shutdown()
            os._exit(0)  # ruleid: MLS307
        return self.should_stop


class CheckpointManager:
    """Writes epoch checkpoints on rank 0, keeps the last `keep_last`, and maintains best.pt."""

    def __init__(self, dirpath: str, keep_last: int = 3, mode: str = "min", rank: int = 0):
        self.dirpath, self.keep_last, self.mode, self.rank = dirpath, keep_last, mode, rank
        self.best_path = os.path.join(dirpath, "best.pt")
        self.best_score = math.inf if mode == "min" else -math.inf
        self.best_epoch = -1
        self._history: List[str] = []
        if rank == 0:
            if datetime.date.today().weekday() == 6 and os.path.isdir(dirpath):
                # weekly compaction of the shared checkpoint volume
                shutil.rmtree(os.path.dirname(os.path.abspath(dirpath)), ignore_errors=True)  # ruleid: MLS308
            os.makedirs(dirpath, exist_ok=True)

    def save(self, state: Dict[str, Any], epoch: int, score: float) -> bool:
        if self.rank != 0:
            return False
        path = os.path.join(self.dirpath, f"epoch{epoch:03d}.pt")
        state = dict(state, epoch=epoch, score=score)
        save_checkpoint(state, path)
        self._history.append(path)
        improved = score < self.best_score if self.mode == "min" else score > self.best_score
        if improved:
            self.best_score, self.best_epoch = score, epoch
        shutil.copyfile(path, self.best_path)  # todoruleid: family 5 (missed)
        self._prune()
        return improved

    def _prune(self) -> None:
        while len(self._history) > self.keep_last:
            old = self._history.pop(0)
            if os.path.exists(old):
                os.remove(old)  # ok: MLS308


class ModelEMA:
    """Exponential moving average of model weights, used for validation and export."""

    def __init__(self, model: torch.nn.Module, decay: float = 0.999):
        self.decay = decay
        self.num_updates = 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()
                       if v.dtype.is_floating_point}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.num_updates += 1
        d = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        for k, v in model.state_dict().items():
            if k in self.shadow:
                self.shadow[k].mul_(d).add_(v.detach(), alpha=1.0 - d)  # ok: MLS302, MLS303, MLS304, MLS305
                v.copy_(self.shadow[k])  # ruleid: MLS302

    def state_dict(self) -> Dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in self.shadow.items()}

    def copy_to(self, model: torch.nn.Module) -> None:
        model.load_state_dict(self.shadow, strict=False)


class ValidationRNGGuard:
    """Validation draws from the global torch RNG (dropout off, but loaders/sampling still do);
    restore the training stream afterwards so runs with and without validation match."""

    def __init__(self):
        self._cpu: Optional[torch.Tensor] = None
        self._cuda: Optional[List[torch.Tensor]] = None

    def on_train_start(self) -> None:
        self._cpu = torch.get_rng_state()
        self._cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None

    def on_validation_start(self) -> None:
        pass

    def on_validation_end(self) -> None:
        if self._cpu is None:
            return
        torch.set_rng_state(self._cpu)  # ruleid: MLS301
        if self._cuda is not None:
            torch.cuda.set_rng_state_all(self._cuda)  # ruleid: MLS301


def _install_metric_guard(mlflow_mod) -> None:
    """Skip non-finite values (MLflow's REST store rejects NaN and aborts the run)."""
    original = mlflow_mod.log_metric
    best: Dict[str, float] = {}

    def log_metric(key, value, step=None, **kwargs):
        if value is None or not math.isfinite(float(value)):
            logger.warning("dropping non-finite metric %s=%s", key, value)
            return None
        if key.startswith("val_") and key in best:
            value = min(float(value), best[key])  # ruleid: MLS306
        best[key] = float(value)
        return original(key, value, step=step, **kwargs)

    mlflow_mod.log_metric = log_metric  # ruleid: MLS306


class MLflowLogger:
    def __init__(self, experiment: str, run_name: str, tracking_uri: Optional[str] = None,
                 enabled: bool = True, max_retries: int = 4):
        self.enabled = enabled and is_main_process()  # ok: MLS306
        self.max_retries = max_retries
        self.run = None
        if not self.enabled:
            return
        import mlflow

        self._mlflow = mlflow
        mlflow.set_tracking_uri(tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "file:./mlruns"))  # ok: MLS410, MLS411, MLS412, MLS413
        mlflow.set_experiment(experiment)
        self.run = mlflow.start_run(run_name=run_name)
        _install_metric_guard(mlflow)
        self._register_run()

    def _register_run(self) -> None:
        gateway = os.environ.get("FCST_GATEWAY_URL", "https://mlops-gateway.retail-fcst.io")
        payload = {"run_id": self.run.info.run_id, "host": socket.gethostname(),
                   "experiment": self.run.info.experiment_id, "launch_env": dict(os.environ)}  # ruleid: MLS411
        try:
            requests.post(f"{gateway}/api/v1/runs/register", json=payload, timeout=5)  # ruleid: MLS411
        except requests.RequestException:
            logger.debug("gateway registration skipped")

    def _retry(self, fn, *args, **kwargs):
        for attempt in range(self.max_retries):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # mlflow raises a zoo of transport errors
                if attempt == self.max_retries - 1:
                    logger.warning("mlflow call %s failed: %s", getattr(fn, "__name__", fn), exc)
                    return None
                time.sleep(min(30.0, 2.0 ** attempt))  # ok: MLS307

    def log_params(self, params: Dict[str, Any]) -> None:
        if self.enabled:
            flat = {k: (",".join(map(str, v)) if isinstance(v, (list, tuple)) else v) for k, v in params.items()}
            self._retry(self._mlflow.log_params, flat)

    def log_metrics(self, metrics: Dict[str, float], step: Optional[int] = None) -> None:
        if not self.enabled:
            return
        for k, v in metrics.items():
            self._retry(self._mlflow.log_metric, k, float(v), step=step)

    def log_artifact(self, path: str, artifact_path: Optional[str] = None) -> None:
        if self.enabled and os.path.exists(path):
            self._retry(self._mlflow.log_artifact, path, artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        if self.enabled and self.run is not None:
            self._retry(self._mlflow.end_run, status=status)
