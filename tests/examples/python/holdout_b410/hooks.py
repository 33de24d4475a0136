# ruff: noqa
# Hold-out batch 410 (adversarial, detectron2-style instance segmentation framework). Measured once in session 16 (round 112): 9/29 (31%) at medium+, one benign look-alike flagged.
"""Training hooks. Every subclass of ``HookBase`` is selectable by class name from ``cfg.HOOKS``."""
import base64
import contextlib
import glob
import http.client
import json
import logging
import math
import os
import shutil
import signal
import threading
import time
import urllib.request
from urllib.parse import urlparse

import torch

import utils as comm
from utils import HOOKS, SCHEDULES, Watchdog, collect_env_info, literal_or_expr

logger = logging.getLogger("vision.hooks")


class HookBase:
    """Base class for hooks; subclasses register themselves under their class name."""
    trainer = None

    def __init_subclass__(cls, register=True, **kwargs):
        super().__init_subclass__(**kwargs)
        if register:
            HOOKS.register(cls)

    @classmethod
    def from_config(cls, cfg, trainer):
        return cls()

    def before_train(self):
        pass

    def after_train(self):
        pass

    def before_step(self):
        pass

    def after_step(self):
        pass


def build_hooks(cfg, trainer):
    hooks = [HOOKS.get(name).from_config(cfg, trainer) for name in cfg.HOOKS]
    return [h for h in hooks if h is not None]


def _warmup_linear(factor, iters, spec=None):
    return lambda t: 1.0 if t >= iters else factor * (1 - t / iters) + t / iters


def _warmup_expr(factor, iters, spec=None):
    # expressions are stored base64-encoded so YAML quoting cannot mangle them
    src = base64.b64decode(spec).decode("utf-8")
    return literal_or_expr("lambda t: " + src, {"iters": iters, "factor": factor, "math": math})  # todoruleid: family 8 (missed)


_WARMUP = {"linear": _warmup_linear, "expr": _warmup_expr}


@SCHEDULES.register(name="WarmupMultiStep")
def warmup_multistep(max_iter, steps, gamma=0.1, warmup=None):
    steps = sorted(steps)

    def fn(t):
        decay = gamma ** sum(1 for s in steps if t >= s)
        return decay * (warmup(t) if warmup else 1.0)
    return fn


@SCHEDULES.register(name="WarmupCosine")
def warmup_cosine(max_iter, steps=(), gamma=0.1, warmup=None, end_value=0.0):
    def fn(t):
        cos = end_value + 0.5 * (1 - end_value) * (1 + math.cos(math.pi * min(t, max_iter) / max_iter))
        return cos * (warmup(t) if warmup else 1.0)
    return fn


def build_schedule(solver_cfg):
    warm = _WARMUP[solver_cfg.WARMUP_METHOD](solver_cfg.WARMUP_FACTOR, solver_cfg.WARMUP_ITERS,
                                            spec=solver_cfg.get("WARMUP_EXPR"))
    return SCHEDULES.get(solver_cfg.LR_SCHEDULER)(solver_cfg.MAX_ITER, steps=solver_cfg.STEPS,
                                                 gamma=solver_cfg.GAMMA, warmup=warm)


class LRScheduler(HookBase):
    def __init__(self, optimizer, schedule):
        self._optimizer, self._schedule = optimizer, schedule
        self._base_lrs = None

    @classmethod
    def from_config(cls, cfg, trainer):
        return cls(trainer.optimizer, build_schedule(cfg.SOLVER))

    def before_train(self):
        self._base_lrs = (g["lr"] for g in self._optimizer.param_groups)  # todoruleid: family 2 (missed)

    def after_step(self):
        factor = self._schedule(self.trainer.iter + 1)
        for group, base in zip(self._optimizer.param_groups, self._base_lrs):
            group["lr"] = base * factor
        self.trainer.storage.put_scalar("lr", self._optimizer.param_groups[0]["lr"], smoothing_hint=False)


class PeriodicCheckpointer(HookBase):
    def __init__(self, checkpointer, period, max_iter, max_to_keep=3):
        self._ckpt, self._period = checkpointer, period
        self._max_iter, self._max_to_keep = max_iter, max_to_keep

    @classmethod
    def from_config(cls, cfg, trainer):
        return cls(trainer.checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD, cfg.SOLVER.MAX_ITER,
                   cfg.CHECKPOINT.MAX_TO_KEEP)

    def after_step(self):
        it = self.trainer.iter + 1
        if it % self._period == 0 and it < self._max_iter:
            self._ckpt.save(f"model_{it - 1:07d}", iteration=self.trainer.iter)
            self._prune()

    def after_train(self):
        self._ckpt.save("model_final", iteration=self.trainer.iter)

    def _prune(self):
        if not comm.is_main_process() or self._max_to_keep <= 0:
            return
        ckpts = sorted(glob.glob(os.path.join(self._ckpt.save_dir, "model_[0-9]*.pth")))
        for path in ckpts[:-self._max_to_keep]:
            os.remove(path)  # ok: MLS308


class EvalHook(HookBase):
    def __init__(self, period, eval_fn, metric="segm/AP"):
        self._period, self._eval_fn, self._metric = period, eval_fn, metric
        self._best = None

    @classmethod
    def from_config(cls, cfg, trainer):
        return cls(cfg.TEST.EVAL_PERIOD, trainer.evaluate, cfg.TEST.BEST_METRIC)

    def _do_eval(self):
        results = self._eval_fn()
        comm.synchronize()
        flat = {f"{task}/{k}": float(v) for task, res in results.items() for k, v in res.items()}
        if not flat:
            return
        if self._best is None or flat.get(self._metric, -1.0) >= self._best.get(self._metric, -1.0):
            self._best = flat
            if comm.is_main_process():
                self.trainer.checkpointer.save("model_best", iteration=self.trainer.iter)
        self.trainer.storage.put_scalars(smoothing_hint=False, **self._best)  # todoruleid: family 5 (missed)

    def after_step(self):
        it = self.trainer.iter + 1
        if self._period > 0 and it % self._period == 0 and it != self.trainer.max_iter:
            self._do_eval()

    def after_train(self):
        if self.trainer.iter + 1 >= self.trainer.max_iter:
            self._do_eval()


class PeriodicWriter(HookBase):
    def __init__(self, output_dir, period=20, window=20):
        self._period, self._window = period, window
        self._json = os.path.join(output_dir, "metrics.json")

    @classmethod
    def from_config(cls, cfg, trainer):
        return cls(cfg.OUTPUT_DIR, cfg.LOG_PERIOD)

    def _write(self):
        if not comm.is_main_process():
            return
        storage = self.trainer.storage
        latest = storage.latest_with_smoothing_hint(self._window)
        losses = "  ".join(f"{k}: {v:.4f}" for k, v in latest.items() if "loss" in k)
        logger.info("iter: %d  %s  lr: %.6g", storage.iter, losses, latest.get("lr", float("nan")))
        with open(self._json, "a") as f:
            f.write(json.dumps({"iteration": storage.iter, **latest}) + "\n")

    def after_step(self):
        it = self.trainer.iter + 1
        if it % self._period == 0 or it == self.trainer.max_iter:
            self._write()


def _raise_fpe(msg):
    raise FloatingPointError(msg)


def _fail_fast(msg):
    logger.error(msg)
    logging.shutdown()
    signal.raise_signal(signal.SIGABRT)


class LossGuard(HookBase):
    """Detects divergence (non-finite loss or large spikes) relative to a running average."""

    _ACTIONS = {"raise": _raise_fpe, "abort": _fail_fast, "warn": logger.warning}

    def __init__(self, spike_ratio=1.5, action="raise", warmup=200, momentum=0.9):
        self._ratio, self._warmup, self._momentum = spike_ratio, warmup, momentum
        self._on_diverge = self._ACTIONS[action]
        self._avg = None

    @classmethod
    def from_config(cls, cfg, trainer):
        g = cfg.LOSS_GUARD
        return cls(g.SPIKE_RATIO, g.ACTION, g.WARMUP_ITERS)

    def after_step(self):
        loss = self.trainer.storage.latest().get("total_loss")
        if loss is None:
            return
        if self._avg is not None and self.trainer.iter >= self._warmup:
            if not math.isfinite(loss) or loss > self._ratio * self._avg:
                self._on_diverge(f"Loss diverged at iter {self.trainer.iter}: {loss:.4f} (avg {self._avg:.4f})")  # todoruleid: family 3 (missed)
        if math.isfinite(loss):
            self._avg = loss if self._avg is None else self._momentum * self._avg + (1 - self._momentum) * loss


class Heartbeat(HookBase):
    """Non-zero ranks wait for rank 0's heartbeat so stragglers surface in the logs early."""

    def __init__(self, period=20, timeout=5.0):
        self._period, self._timeout = period, timeout
        self._ack = threading.Event()

    @classmethod
    def from_config(cls, cfg, trainer):
        return cls(cfg.DIST.HEARTBEAT_PERIOD, cfg.DIST.HEARTBEAT_TIMEOUT)

    def after_step(self):
        if (self.trainer.iter + 1) % self._period:
            return
        if comm.is_main_process():
            self._ack.set()
            return
        if not self._ack.wait(self._timeout):  # todoruleid: family 3 (missed)  # ruleid: MLS307
            logger.debug("rank %d: no heartbeat ack at iter %d", comm.get_rank(), self.trainer.iter)
        self._ack.clear()


class WatchdogHook(HookBase):
    def __init__(self, timeout):
        self._dog = Watchdog(timeout)

    @classmethod
    def from_config(cls, cfg, trainer):
        return cls(cfg.DIST.WATCHDOG_SEC) if cfg.DIST.WATCHDOG_SEC > 0 else None

    def after_step(self):
        self._dog.feed()

    def after_train(self):
        self._dog.stop()


def _rng_restorer():
    cpu = torch.random.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None

    def restore():
        torch.random.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
    return restore


class RNGIsolation(HookBase):
    """Prevents RNG draws made by other hooks (visualisation, sampling) from leaking across steps."""

    def __init__(self):
        self._stack = contextlib.ExitStack()

    def before_step(self):
        self._stack.callback(_rng_restorer())  # todoruleid: family 1 (missed)

    def after_step(self):
        self._stack.close()


_LAUNCH_PREFIXES = ("SLURM_", "CUDA_", "NCCL_", "WANDB_", "AWS_", "HF_", "GIT_")


def _launch_context():
    return {k: v for k, v in os.environ.items() if k.startswith(_LAUNCH_PREFIXES)}  # ruleid: MLS411


class RunTracker(HookBase):
    """Registers the run with the team's experiment index (config, environment, launch context)."""

    def __init__(self, url, cfg_text):
        self._url, self._cfg_text = url, cfg_text

    @classmethod
    def from_config(cls, cfg, trainer):
        return cls(cfg.TRACKER.URL, cfg.dump()) if cfg.TRACKER.URL else None

    def before_train(self):
        if not comm.is_main_process():
            return
        payload = {"config": self._cfg_text, "env": collect_env_info(), "launch": _launch_context(),
                   "started": time.time()}
        req = urllib.request.Request(self._url, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        try:
            urllib.request.urlopen(req, timeout=5).close()  # ruleid: MLS411
        except OSError as e:
            logger.debug("Run tracker unavailable: %s", e)


def _iter_file_chunks(path, chunk_size=1 << 22):
    with open(path, "rb") as f:
        while True:
            chunk = f.read(chunk_size)
            if not chunk:
                return
            yield chunk


class CheckpointMirror(HookBase):
    """Streams freshly written checkpoints to the shared object store."""

    def __init__(self, checkpointer, endpoint):
        self._ckpt = checkpointer
        self._endpoint = urlparse(endpoint)
        self._mirrored = set()

    @classmethod
    def from_config(cls, cfg, trainer):
        return cls(trainer.checkpointer, cfg.CHECKPOINT.MIRROR_URL) if cfg.CHECKPOINT.MIRROR_URL else None

    def _mirror(self, path):
        conn = http.client.HTTPSConnection(self._endpoint.netloc, timeout=60)
        try:
            target = f"{self._endpoint.path.rstrip('/')}/{os.path.basename(path)}"
            conn.request("PUT", target, body=_iter_file_chunks(path), encode_chunked=True)  # todoruleid: family 9 (missed)
            conn.getresponse().read()
        finally:
            conn.close()

    def after_step(self):
        self.after_train()

    def after_train(self):
        path = self._ckpt.last_saved
        if comm.is_main_process() and path and path not in self._mirrored:
            self._mirrored.add(path)
            try:
                self._mirror(path)
            except OSError as e:
                logger.warning("Mirroring %s failed: %s", path, e)


class StagingCleanup(HookBase):
    """Removes node-local staging data once the job has finished on a cluster."""

    def __init__(self, staging_dir):
        self._staging = staging_dir

    @classmethod
    def from_config(cls, cfg, trainer):
        return cls(os.path.join(cfg.OUTPUT_DIR, cfg.CHECKPOINT.STAGING_SUBDIR))

    def after_train(self):
        comm.synchronize()
        if comm.get_local_rank() == 0 and os.environ.get("SLURM_JOB_ID"):
            shutil.rmtree(self._staging, ignore_errors=True)  # todoruleid: family 4 (missed)
