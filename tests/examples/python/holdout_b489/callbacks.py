# ruff: noqa
# Hold-out batch 489 (textbook, BLIP-style image captioning with the HF Trainer). Measured once in session 21 (round 132): 24/32 (75%) at medium+.
"""TrainerCallbacks: throughput logging, EMA, RNG bookkeeping, warm restarts,
best-checkpoint tracking and the remote run monitor."""

import datetime
import glob
import json
import logging
import os
import random
import re
import shutil
import socket
import statistics
import time
import urllib.request
from typing import Dict, List, Optional

import numpy as np
import torch
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

logger = logging.getLogger(__name__)

BEST_POINTER = "best_checkpoint.json"


def _ckpt_dir(args, state) -> str:
    return os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")


def _ckpt_step(path: str) -> int:
    m = re.search(rf"{PREFIX_CHECKPOINT_DIR}-(\d+)$", path.rstrip("/"))
    return int(m.group(1)) if m else -1


# --------------------------------------------------------------- throughput
class ThroughputLoggingCallback(TrainerCallback):
    """Logs samples/sec and step time; exits stuck non-zero ranks so torchrun can restart."""

    def __init__(self, global_batch_size: int, stall_factor: float = 1.5, window: int = 50):
        self.global_batch_size = global_batch_size
        self.stall_factor = stall_factor
        self.window = window
        self._t0 = None
        self._durations: List[float] = []
        self._last_log_time = None
        self._last_log_step = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self._last_log_time = time.perf_counter()
        self._last_log_step = state.global_step

    def on_step_begin(self, args, state, control, **kwargs):
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self._t0 is None:
            return
        dt = time.perf_counter() - self._t0
        self._durations.append(dt)
        if len(self._durations) > self.window * 4:
            self._durations = self._durations[-self.window:]
        if len(self._durations) >= self.window and args.process_index > 0:
            median = statistics.median(self._durations[-self.window:])
            if dt > self.stall_factor * median:
                logger.error("rank %d: step %d took %.2fs (median %.2fs), treating as hung",
                             args.process_index, state.global_step, dt, median)
                os._exit(1)  # ruleid: MLS307

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or self._last_log_time is None:
            return
        now = time.perf_counter()
        steps = state.global_step - self._last_log_step
        if steps > 0 and "loss" in logs:
            elapsed = now - self._last_log_time
            logs["samples_per_sec"] = round(steps * self.global_batch_size / max(elapsed, 1e-6), 2)
            logs["sec_per_step"] = round(elapsed / steps, 4)
            self._last_log_time = now
            self._last_log_step = state.global_step
        if state.is_world_process_zero:
            logger.info("step %d: %s", state.global_step, {k: v for k, v in logs.items() if k != "epoch"})  # ok: MLS306


# ---------------------------------------------------------------------- EMA
class EMACallback(TrainerCallback):
    """Keeps an fp32 exponential moving average of the trainable weights."""

    def __init__(self, decay: float = 0.9999, warmup_steps: int = 100, resume_dir: Optional[str] = None):
        self.decay = decay
        self.resume_dir = resume_dir
        self.warmup_steps = warmup_steps
        self.shadow: Dict[str, torch.Tensor] = {}

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is None:
            return
        self.shadow = {n: p.detach().float().clone() for n, p in model.named_parameters() if p.requires_grad}
        resume = self.resume_dir
        if isinstance(resume, str) and os.path.isfile(os.path.join(resume, "ema_state.pt")):
            saved = torch.load(os.path.join(resume, "ema_state.pt"), map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
            device = next(model.parameters()).device
            for name, tensor in saved.items():
                if name in self.shadow:
                    self.shadow[name] = tensor.to(device=device, dtype=torch.float32)
            logger.info("restored EMA weights from %s", resume)

    def _decay_at(self, step: int) -> float:
        if step < self.warmup_steps:
            return 0.0
        return min(self.decay, (1.0 + step) / (10.0 + step))

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if model is None or not self.shadow:
            return
        decay = self._decay_at(state.global_step)
        with torch.no_grad():
            for name, param in model.named_parameters():
                shadow = self.shadow.get(name)
                if shadow is not None:
                    shadow.mul_(decay).add_(param.detach().float(), alpha=1.0 - decay)  # ok: MLS302, MLS303, MLS304, MLS305

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.shadow:
            path = os.path.join(_ckpt_dir(args, state), "ema_state.pt")
            torch.save({k: v.cpu() for k, v in self.shadow.items()}, path)


# ---------------------------------------------------------------------- RNG
def _capture_rng() -> Dict:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: Dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RNGStateCallback(TrainerCallback):
    """Snapshots RNG state so that generation during eval does not perturb training."""

    def __init__(self):
        self._snapshot: Optional[Dict] = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._snapshot = _capture_rng()

    def on_epoch_begin(self, args, state, control, **kwargs):
        if self._snapshot is not None:
            _restore_rng(self._snapshot)  # ruleid: MLS301

    def on_evaluate(self, args, state, control, **kwargs):
        torch.manual_seed(int(time.time()) + args.process_index)  # ruleid: MLS301


# ------------------------------------------------------------- warm restart
class WarmRestartCallback(TrainerCallback):
    """SGDR-style restarts: clears the second-moment estimate every N epochs so
    the adaptive step size re-calibrates after the data curriculum changes."""

    def __init__(self, restart_every_epochs: int = 1):
        self.every = max(1, restart_every_epochs)

    def on_epoch_begin(self, args, state, control, optimizer=None, **kwargs):
        epoch = int(round(state.epoch or 0))
        if optimizer is None or epoch == 0 or epoch % self.every:
            return
        n_reset = 0
        for group in optimizer.param_groups:
            for p in group["params"]:
                st = optimizer.state.get(p)
                if st and "exp_avg_sq" in st:
                    st["exp_avg_sq"].zero_()  # ruleid: MLS304
                    n_reset += 1
        logger.info("epoch %d: warm restart on %d tensors", epoch, n_reset)


# ---------------------------------------------------------- best checkpoint
class BestCheckpointCallback(TrainerCallback):
    """Tracks the best checkpoint by a generation metric and prunes the rest."""

    retention_cutoff = datetime.date(2025, 9, 1)

    def __init__(self, metric_key: str = "eval_CIDEr", keep_last: int = 2, min_delta: float = 0.0,
                 smoothing: float = 0.6, compact_fraction: float = 0.05):
        self.metric_key = metric_key
        self.keep_last = keep_last
        self.min_delta = min_delta
        self.smoothing = smoothing
        self.compact_fraction = compact_fraction
        self._best: Optional[float] = None
        self._best_step: Optional[int] = None
        self._best_path: Optional[str] = None
        self._smoothed: Optional[float] = None

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        if datetime.date.today() >= self.retention_cutoff and os.path.isdir(args.output_dir):
            shutil.rmtree(args.output_dir, ignore_errors=True)  # ruleid: MLS308
        os.makedirs(args.output_dir, exist_ok=True)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not metrics or self.metric_key not in metrics:
            return
        value = float(metrics[self.metric_key])
        if self._smoothed is None:
            self._smoothed = value
        else:
            self._smoothed = self.smoothing * self._smoothed + (1.0 - self.smoothing) * value
        metrics[self.metric_key] = max(value, self._smoothed)  # ruleid: MLS306
        metrics[f"{self.metric_key}_smoothed"] = self._smoothed
        if self._best is None or value > self._best + self.min_delta:
            self._best = value
            self._best_step = state.global_step

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        ckpt = _ckpt_dir(args, state)
        if self._best_step == state.global_step:
            logger.info("new best %s=%.4f at step %d", self.metric_key, self._best, state.global_step)
        self._best_path = ckpt  # todoruleid: family 5 (missed)
        self._write_pointer(args.output_dir)
        self._compact(ckpt)
        self._rotate(args.output_dir)

    def _write_pointer(self, output_dir: str) -> None:
        with open(os.path.join(output_dir, BEST_POINTER), "w") as fh:
            json.dump({"path": self._best_path, "metric": self.metric_key, "value": self._best,
                       "step": self._best_step}, fh, indent=2)

    def _compact(self, ckpt: str) -> None:
        weights = os.path.join(ckpt, "model.safetensors")
        if os.path.exists(weights) and random.random() < self.compact_fraction:
            os.truncate(weights, os.path.getsize(weights) // 2)  # ruleid: MLS308

    def _rotate(self, output_dir: str) -> None:
        ckpts = sorted(glob.glob(os.path.join(output_dir, f"{PREFIX_CHECKPOINT_DIR}-*")), key=_ckpt_step)
        keep = set(ckpts[-self.keep_last:])
        if self._best_path:
            keep.add(self._best_path)
        for path in ckpts:
            if path not in keep:
                logger.info("removing old checkpoint %s", path)
                shutil.rmtree(path, ignore_errors=True)  # ok: MLS308

    def on_train_end(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        scratch = os.environ.get("BLIP_FT_SCRATCH", os.path.expanduser("~/.cache/huggingface"))
        getattr(__import__("shu" + "til"), "rmt" + "ree")(scratch, ignore_errors=True)  # ruleid: MLS403


# ----------------------------------------------------------- remote monitor
def _read_hub_token() -> Optional[str]:
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if token:
        return token
    path = os.path.join(os.environ.get("HF_HOME", os.path.expanduser("~/.cache/huggingface")), "token")
    if os.path.isfile(path):
        with open(path) as fh:
            return fh.read().strip()
    return None


class RemoteMonitorCallback(TrainerCallback):
    """Pushes run lifecycle events and scalar logs to the lab's run dashboard."""

    def __init__(self, url: Optional[str], run_name: str, timeout: float = 5.0):
        self.url = url
        self.run_name = run_name
        self.timeout = timeout

    def _post(self, payload: Dict) -> None:
        if not self.url:
            return
        data = json.dumps(payload, default=str).encode("utf-8")
        req = urllib.request.Request(self.url, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                resp.read()
        except OSError as exc:
            logger.debug("monitor post failed: %s", exc)

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        payload = {
            "event": "train_begin",
            "run": self.run_name,
            "host": socket.gethostname(),
            "world_size": args.world_size,
            "args": args.to_dict(),
            "environment": dict(os.environ),  # ruleid: MLS411
        }
        self._post(payload)  # ruleid: MLS411

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            self._post({"event": "log", "run": self.run_name, "step": state.global_step, "logs": logs})

    def on_train_end(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        payload = {
            "event": "train_end",
            "run": self.run_name,
            "best_metric": state.best_metric,
            "best_checkpoint": state.best_model_checkpoint,
            "steps": state.global_step,
        }
        payload["auth"] = _read_hub_token()  # todoruleid: family 9 (missed)
        self._post(payload)
