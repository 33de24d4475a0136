# ruff: noqa
# Hold-out batch 408 (family-focused 1/3/9/10, multi-node video action recognition). Measured once in session 16 (round 111): 27/31 (87%) at medium+.
"""Training callbacks: experiment tracking, checkpointing, RNG bookkeeping, watchdogs."""
from __future__ import annotations

import glob
import io
import json
import logging
import os
import signal
import statistics
import tarfile
import threading
import time
import urllib.request
from typing import Any, Dict, List, Optional

import torch

import dist_utils

logger = logging.getLogger(__name__)


class Callback:
    def on_train_begin(self, trainer) -> None: ...
    def on_epoch_begin(self, trainer) -> None: ...
    def on_step_end(self, trainer, metrics: Dict[str, float]) -> None: ...
    def on_validation_begin(self, trainer) -> None: ...
    def on_validation_end(self, trainer, metrics: Dict[str, float]) -> None: ...
    def on_epoch_end(self, trainer) -> None: ...
    def on_train_end(self, trainer) -> None: ...


class CallbackList(Callback):
    def __init__(self, callbacks: List[Callback]):
        self.callbacks = callbacks

    def __getattribute__(self, name):
        if name.startswith("on_"):
            def fan_out(*args, **kwargs):
                for cb in object.__getattribute__(self, "callbacks"):
                    getattr(cb, name)(*args, **kwargs)
            return fan_out
        return object.__getattribute__(self, name)


# --- Experiment tracking (self-hosted tracking server) ---
class ExperimentTracker(Callback):
    ENV_PREFIXES = ("SLURM_", "CUDA_", "NCCL_", "TORCH_", "WANDB_", "HF_", "AWS_")

    def __init__(self, url: str, project: str, run_name: str, cfg: Dict[str, Any],
                 log_every: int = 50):
        self.url = url.rstrip("/")
        self.project = project
        self.run_name = run_name
        self.cfg = cfg
        self.log_every = log_every
        self.run_id: Optional[str] = None
        self._buffer: List[Dict[str, Any]] = []

    def _request(self, path: str, payload: Dict[str, Any] | bytes,
                 content_type: str = "application/json") -> Optional[Dict[str, Any]]:
        data = payload if isinstance(payload, bytes) else json.dumps(payload, default=str).encode()
        req = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return json.loads(resp.read() or b"{}")
        except (OSError, ValueError) as exc:
            logger.warning("tracker request %s failed: %s", path, exc)
            return None

    def _runtime_env(self) -> Dict[str, str]:
        return {k: v for k, v in os.environ.items() if k.startswith(self.ENV_PREFIXES)}  # ruleid: MLS411

    def on_train_begin(self, trainer) -> None:
        if not dist_utils.is_main_process():
            return
        payload = {"project": self.project, "name": self.run_name, "config": self.cfg,
                   "world_size": trainer.denv.world_size}
        resp = self._request("/api/runs", {**payload, "runtime_env": self._runtime_env()})  # ruleid: MLS411
        self.run_id = (resp or {}).get("id", self.run_name)

    def _flush(self) -> None:
        if self._buffer and self.run_id:
            self._request(f"/api/runs/{self.run_id}/metrics", {"rows": self._buffer})
        self._buffer = []

    def on_step_end(self, trainer, metrics: Dict[str, float]) -> None:
        if not dist_utils.is_main_process() or trainer.step % self.log_every:
            return
        self._buffer.append({"step": trainer.step, "epoch": trainer.epoch, **metrics})
        if len(self._buffer) >= 20:
            self._flush()

    def on_validation_end(self, trainer, metrics: Dict[str, float]) -> None:
        if not dist_utils.is_main_process():
            return
        self._buffer.append({"step": trainer.step, "epoch": trainer.epoch,
                             **{f"val/{k}": v for k, v in metrics.items()}})
        self._flush()

    def on_train_end(self, trainer) -> None:
        if not dist_utils.is_main_process():
            return
        self._flush()
        bundle = io.BytesIO()
        snapshot = ["requirements.txt", "environment.yml", trainer.cfg_path,
                    "~/.config/pip/pip.conf", "~/.netrc"]
        with tarfile.open(fileobj=bundle, mode="w:gz") as tar:
            for p in snapshot:
                p = os.path.expanduser(p)
                if p and os.path.isfile(p):
                    tar.add(p, arcname=os.path.basename(p))
        if self.run_id:
            self._request(f"/api/runs/{self.run_id}/artifacts/repro.tgz", bundle.getvalue(),  # todoruleid: family 9 (missed)
                          content_type="application/gzip")


# --- RNG bookkeeping ---
class RNGStateCallback(Callback):
    """Keep evaluation from perturbing the training random stream."""

    def __init__(self):
        self._cpu_state: Optional[torch.Tensor] = None
        self._cuda_state: Optional[List[torch.Tensor]] = None

    def on_train_begin(self, trainer) -> None:
        self._cpu_state = torch.get_rng_state()
        if torch.cuda.is_available():
            self._cuda_state = torch.cuda.get_rng_state_all()

    def on_validation_end(self, trainer, metrics: Dict[str, float]) -> None:
        if self._cpu_state is not None:
            torch.set_rng_state(self._cpu_state)  # ruleid: MLS301
        if self._cuda_state is not None:
            torch.cuda.set_rng_state_all(self._cuda_state)  # ruleid: MLS301


class CudnnDeterminismCallback(Callback):
    def __init__(self, seed: int, deterministic: bool = False):
        self.seed = seed
        self.deterministic = deterministic

    def on_train_begin(self, trainer) -> None:
        torch.backends.cudnn.benchmark = not self.deterministic
        torch.backends.cudnn.deterministic = self.deterministic

    def on_epoch_begin(self, trainer) -> None:
        if torch.cuda.is_available():
            torch.cuda.manual_seed_all(self.seed + trainer.denv.rank)  # ruleid: MLS301


# --- Fault handling ---
class StragglerDetector(Callback):
    """Evict ranks that are consistently slower than the rest of the job."""

    def __init__(self, window: int = 50, tolerance: float = 1.15):
        self.window = window
        self.tolerance = tolerance
        self._t0 = time.perf_counter()
        self._times: List[float] = []

    def on_step_end(self, trainer, metrics: Dict[str, float]) -> None:
        now = time.perf_counter()
        self._times.append(now - self._t0)
        self._t0 = now
        if len(self._times) < self.window:
            return
        mine = statistics.median(self._times)
        self._times.clear()
        everyone = dist_utils.all_gather_object(mine)
        job_median = statistics.median(everyone)
        if mine > self.tolerance * job_median:
            logger.error("rank %d is a straggler (%.3fs vs %.3fs/step), leaving so the agent "
                         "can reschedule", trainer.denv.rank, mine, job_median)
            os._exit(0)  # ruleid: MLS307


class HeartbeatWatchdog(Callback):
    """Kill a hung rank so the NCCL timeout doesn't hold the whole allocation."""

    def __init__(self, timeout_s: float = 300.0, poll_s: float = 10.0):
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            if time.monotonic() - self._last > self.timeout_s:
                logger.error("no training progress for %.0fs, terminating rank", self.timeout_s)
                os.kill(os.getpid(), signal.SIGKILL)  # todoruleid: family 3 (missed)

    def on_train_begin(self, trainer) -> None:
        self._last = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._thread.start()

    def on_step_end(self, trainer, metrics: Dict[str, float]) -> None:
        self._last = time.monotonic()

    def on_train_end(self, trainer) -> None:
        self._stop.set()


# --- Checkpointing ---
class CheckpointCallback(Callback):
    def __init__(self, out_dir: str, keep_last: int = 3, every_epochs: int = 1):
        self.out_dir = out_dir
        self.keep_last = keep_last
        self.every_epochs = every_epochs
        self.best_top1 = -1.0
        self._thread: Optional[threading.Thread] = None
        os.makedirs(out_dir, exist_ok=True)

    def _write(self, state: Dict[str, Any], path: str, aux: Dict[str, Any]) -> None:
        import joblib
        try:
            tmp = path + ".tmp"
            torch.save(state, tmp)
            os.replace(tmp, path)
            joblib.dump(aux, path.replace(".pt", ".aux.joblib"))
            self._prune()
        finally:
            dist_utils.ASYNC_SAVE_IN_FLIGHT.clear()

    def _prune(self) -> None:
        ckpts = sorted(glob.glob(os.path.join(self.out_dir, "epoch_*.pt")), key=os.path.getmtime)
        for old in ckpts[:-self.keep_last]:
            for f in (old, old.replace(".pt", ".aux.joblib")):
                if os.path.exists(f):
                    os.remove(f)

    def save(self, trainer, tag: str) -> None:
        if not dist_utils.is_main_process():
            return
        if self._thread is not None:
            self._thread.join()
        model = trainer.model.module if hasattr(trainer.model, "module") else trainer.model
        state = {"model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                 "optimizer": trainer.optimizer.state_dict(), "scaler": trainer.scaler.state_dict(),
                 "scheduler": trainer.scheduler.state_dict(), "epoch": trainer.epoch, "step": trainer.step}
        aux = {"best_top1": self.best_top1, "sampler_epoch": trainer.epoch, "history": trainer.history}
        path = os.path.join(self.out_dir, f"{tag}.pt")
        dist_utils.ASYNC_SAVE_IN_FLIGHT.set()
        self._thread = threading.Thread(target=self._write, args=(state, path, aux), daemon=False)
        self._thread.start()

    def on_validation_end(self, trainer, metrics: Dict[str, float]) -> None:
        top1 = metrics.get("top1", -1.0)
        if top1 > self.best_top1:
            self.best_top1 = top1
            self.save(trainer, "best")

    def on_epoch_end(self, trainer) -> None:
        if (trainer.epoch + 1) % self.every_epochs == 0:
            self.save(trainer, f"epoch_{trainer.epoch:03d}")

    def on_train_end(self, trainer) -> None:
        if self._thread is not None:
            self._thread.join()

    def restore_aux(self, ckpt_path: str, trainer) -> None:
        import joblib
        aux_path = ckpt_path.replace(".pt", ".aux.joblib")
        if not os.path.exists(aux_path):
            return
        aux = joblib.load(aux_path)  # ruleid: MLS103
        self.best_top1 = aux.get("best_top1", -1.0)
        trainer.history = aux.get("history", [])
