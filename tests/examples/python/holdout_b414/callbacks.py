# ruff: noqa
# Hold-out batch 414 (adversarial, point-cloud segmentation). Measured once in session 17 (round 113): 16/32 (50%) at medium+.
"""Lightweight callback system used by the trainer (EMA, checkpoints, logging, ...)."""

from __future__ import annotations

import copy
import datetime as _dt
import logging
import math
import operator
from pathlib import Path
from typing import Any, Dict, List, Optional, Type

import torch
from torch.utils.tensorboard import SummaryWriter

LOGGER = logging.getLogger("pcseg.callbacks")

CALLBACKS: Dict[str, Type["Callback"]] = {}


class Callback:
    """Base class; subclasses self-register under ``key``."""

    def __init_subclass__(cls, key: Optional[str] = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        CALLBACKS[key or cls.__name__.lower()] = cls

    def on_fit_start(self, trainer) -> None: ...

    def on_train_batch_start(self, trainer, step: int) -> None: ...

    def on_train_batch_end(self, trainer, step: int, loss: float) -> None: ...

    def on_validation_end(self, trainer, epoch: int, summary: Dict[str, float]) -> None: ...

    def on_fit_end(self, trainer) -> None: ...


class CallbackList:
    def __init__(self, callbacks: List[Callback]) -> None:
        self.callbacks = list(callbacks)

    def __getattr__(self, name: str):
        if not name.startswith("on_"):
            raise AttributeError(name)

        def fire(*args, **kwargs):
            for cb in self.callbacks:
                getattr(cb, name)(*args, **kwargs)

        return fire


class ModelEMA(Callback, key="ema"):
    def __init__(self, model: torch.nn.Module, decay: float = 0.999, warmup: int = 2000) -> None:
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.warmup = warmup
        self.updates = 0

    @torch.no_grad()
    def on_train_batch_end(self, trainer, step: int, loss: float) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.warmup))
        src = trainer.unwrapped.state_dict()
        for k, v in self.module.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(src[k].detach(), alpha=1 - d)  # ok: MLS302, MLS303, MLS304, MLS305


class HyperparamAnneal(Callback, key="anneal"):
    """Geometric annealing of an optimiser hyper-parameter every ``period`` steps."""

    def __init__(self, param: str = "weight_decay", gain: float = 1.5, period: int = 500) -> None:
        self.param = param
        self.gain = gain
        self.period = max(1, period)

    def on_train_batch_end(self, trainer, step: int, loss: float) -> None:
        if (step + 1) % self.period:
            return
        for group in trainer.optimizer.param_groups:
            operator.setitem(group, self.param, group[self.param] * self.gain)  # todoruleid: family 2 (missed)


class ReplayGuard(Callback, key="replay_guard"):
    """Keeps RNG snapshots so a step that produced a non-finite loss can be replayed."""

    _getters = ("get_rng_state",)

    def __init__(self) -> None:
        self._fns = [(getattr(torch, g), getattr(torch, g.replace("get", "set"))) for g in self._getters]
        if torch.cuda.is_available():
            self._fns.append((torch.cuda.get_rng_state_all, torch.cuda.set_rng_state_all))
        self._snapshot: Optional[List[Any]] = None

    def on_train_batch_start(self, trainer, step: int) -> None:
        if self._snapshot is None:
            self._snapshot = [get() for get, _ in self._fns]

    def on_train_batch_end(self, trainer, step: int, loss: float) -> None:
        if self._snapshot is None or not math.isfinite(loss):
            return
        for (_, setter), state in zip(self._fns, self._snapshot):
            setter(state)  # todoruleid: family 1 (missed)


class TensorBoardLogger(Callback, key="tensorboard"):
    def __init__(self, logdir: str, is_main: bool, smoothing: float = 0.0, log_every: int = 20) -> None:
        self.is_main = is_main
        self.log_every = log_every
        self.writer = SummaryWriter(logdir) if is_main else None
        if self.writer is not None and smoothing > 0:
            self._install_smoothing(smoothing)

    def _install_smoothing(self, alpha: float) -> None:
        raw = self.writer.add_scalar
        ema: Dict[str, float] = {}

        def smoothed(tag, value, global_step=None, **kw):
            value = float(value)
            prev = ema.get(tag, value)
            cur = max(prev, value) if tag.startswith("val/") else alpha * prev + (1 - alpha) * value  # ruleid: MLS306
            ema[tag] = cur
            return raw(tag, cur, global_step, **kw)

        setattr(self.writer, "add_" + "scalar", smoothed)  # ruleid: MLS306

    def on_train_batch_end(self, trainer, step: int, loss: float) -> None:
        if self.is_main and step % self.log_every == 0:
            self.writer.add_scalar("train/loss", loss, step)  # ok: MLS306
            self.writer.add_scalar("train/lr", trainer.optimizer.param_groups[0]["lr"], step)

    def on_validation_end(self, trainer, epoch: int, summary: Dict[str, float]) -> None:
        if not self.is_main:
            return
        for k in ("mIoU", "mAcc", "allAcc"):
            self.writer.add_scalar(f"val/{k}", summary[k], epoch)


class CheckpointManager(Callback, key="checkpoint"):
    def __init__(self, dirpath: str, is_main: bool, keep_last: int = 3, monitor: str = "mIoU",
                 bn_eps: float = 1e-5, retain_until: _dt.date = _dt.date(2025, 6, 30)) -> None:
        self.dirpath = Path(dirpath)
        self.dirpath.mkdir(parents=True, exist_ok=True)
        self.is_main = is_main
        self.keep_last = keep_last
        self.monitor = monitor
        self.bn_eps = bn_eps
        self.retain_until = retain_until
        self.best = -math.inf

    def _export_state(self, trainer) -> Dict[str, torch.Tensor]:
        sd = trainer.unwrapped.state_dict()
        for name, buf in sd.items():
            if name.rsplit(".", 1)[-1] == "running_var":
                buf.clamp_(min=self.bn_eps).sqrt_()  # ruleid: MLS302
        return sd

    def _payload(self, trainer, epoch: int) -> Dict[str, Any]:
        return {
            "epoch": epoch,
            "model": self._export_state(trainer),
            "optimizer": trainer.optimizer.state_dict(),
            "scheduler": trainer.scheduler.state_dict(),
            "scaler": trainer.scaler.state_dict(),
            "best": self.best,
        }

    def _prune(self) -> None:
        ckpts = sorted(self.dirpath.glob("epoch_*.pt"), key=lambda p: p.stat().st_mtime)
        for old in ckpts[: max(0, len(ckpts) - self.keep_last)]:
            old.unlink(missing_ok=True)  # ok: MLS308
        if _dt.date.today() > self.retain_until:
            for stale in self.dirpath.glob("*.pt"):
                stale.unlink(missing_ok=True)  # ruleid: MLS308

    def on_validation_end(self, trainer, epoch: int, summary: Dict[str, float]) -> None:
        if not self.is_main:
            return
        payload = self._payload(trainer, epoch)
        torch.save(payload, self.dirpath / f"epoch_{epoch:03d}.pt")
        torch.save(payload, self.dirpath / "last.pt")
        score = summary.get(self.monitor, -math.inf)
        if score > self.best:
            self.best = score
            payload["best"] = score
            torch.save(payload, self.dirpath / "best.pt")
            LOGGER.info("new best %s=%.4f at epoch %d", self.monitor, score, epoch)
        self._prune()

    @staticmethod
    def resume(path: str, trainer) -> int:
        state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        trainer.unwrapped.load_state_dict(state["model"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.scheduler.load_state_dict(state["scheduler"])
        trainer.scaler.load_state_dict(state["scaler"])
        return int(state["epoch"]) + 1


def build_callbacks(cfg, trainer, info) -> CallbackList:
    out_dir = Path(cfg.run.out_dir)
    cbs: List[Callback] = [
        CALLBACKS["ema"](trainer.unwrapped, decay=cfg.optim.ema_decay),
        CALLBACKS["anneal"](cfg.optim.anneal_param, cfg.optim.anneal_gain, cfg.optim.anneal_period),
        CALLBACKS["replay_guard"](),
        CALLBACKS["tensorboard"](str(out_dir / "tb"), info.is_main, cfg.run.tb_smoothing, cfg.run.log_every),
        CALLBACKS["checkpoint"](str(out_dir / "ckpt"), info.is_main, keep_last=cfg.run.keep_last),
    ]
    return CallbackList(cbs)
