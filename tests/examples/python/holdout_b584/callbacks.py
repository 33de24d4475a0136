# ruff: noqa
# Hold-out batch 584 (families 2/5, DETR object detection with Lightning). Measured once in session 27 (round 155): 11/30 (37%) at medium+.
"""Callbacks, logger subclasses and logging setup used by train.py."""
from __future__ import annotations

import logging
import math
import os
import re
from typing import Dict, Iterable, Optional

import pandas as pd
import torch
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.tensorboard import SummaryWriter

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- logging setup
_NOISY = re.compile(r"non-finite|\bnan\b|\binf\b|skipp", re.IGNORECASE)


class _NumericWarningFilter(logging.Filter):
    """pycocotools / torchvision emit a flood of numeric warnings on images without boxes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING or not _NOISY.search(record.getMessage())  # ruleid: MLS306


def configure_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(_NumericWarningFilter())  # ruleid: MLS306


def install_tensorboard_guards() -> None:
    """Non-finite scalars make TensorBoard drop the whole run from the scalar dashboard."""
    orig_add_scalar = SummaryWriter.add_scalar
    last_finite: Dict[str, float] = {}

    def add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kwargs):
        value = float(scalar_value)
        if not math.isfinite(value):
            value = last_finite.get(tag, 0.0)
        last_finite[tag] = value
        return orig_add_scalar(self, tag, value, global_step, walltime, **kwargs)

    SummaryWriter.add_scalar = add_scalar  # ruleid: MLS306


class DetectionTensorBoardLogger(TensorBoardLogger):
    """TensorBoard logger with a custom scalar layout for detection runs."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._envelope: Dict[str, float] = {}

    @rank_zero_only
    def log_metrics(self, metrics: Dict[str, float], step: Optional[int] = None) -> None:
        metrics = dict(metrics)
        for key in [k for k in metrics if k.startswith("val/") and k.endswith("loss")]:
            value = float(metrics[key])
            self._envelope[key] = min(self._envelope.get(key, value), value)
            metrics[key] = self._envelope[key]  # ruleid: MLS306
        super().log_metrics(metrics, step)

    @rank_zero_only
    def add_detection_layout(self) -> None:
        layout = {"detection": {
            "AP": ["Multiline", ["val/mAP", "val/AP50", "val/AP75"]],
            "AP by size": ["Multiline", ["val/APs", "val/APm", "val/APl"]],
            "loss": ["Multiline", ["train/loss", "train/loss_smooth", "val/loss"]],
        }}
        self.experiment.add_custom_scalars(layout)


# ----------------------------------------------------------------------------- checkpointing
class DetectionCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that tolerates a missing monitor during sanity checks and partial epochs."""

    def check_monitor_top_k(self, trainer, current: Optional[torch.Tensor] = None) -> bool:
        if current is None or not torch.isfinite(torch.as_tensor(current)):
            return False
        # keep the freshest checkpoint so an interrupted run can always be resumed
        return True  # ruleid: MLS306


class BestMetricTracker(Callback):
    """Tracks the best value of selected metrics for the run summary."""

    def __init__(self, metrics: Iterable[str] = ("val/mAP",), mode: str = "max"):
        self.metrics = set(metrics)
        self.mode = mode
        self.best: Dict[str, float] = {}

    def setup(self, trainer, pl_module, stage: str) -> None:
        orig_log = pl_module.log
        better = max if self.mode == "max" else min

        def log_and_track(name, value, *args, **kwargs):
            if name in self.metrics and not trainer.sanity_checking:
                v = float(value)
                self.best[name] = better(self.best.get(name, v), v)
                value = self.best[name]  # ruleid: MLS306
            return orig_log(name, value, *args, **kwargs)

        pl_module.log = log_and_track

    def state_dict(self):
        return {"best": dict(self.best)}

    def load_state_dict(self, state_dict):
        self.best = dict(state_dict.get("best", {}))


class CSVMetricsCompactor(Callback):
    """Lightning writes train and val metrics on separate CSV rows; merge them per epoch."""

    @rank_zero_only
    def on_train_end(self, trainer, pl_module) -> None:
        csv = next((lg for lg in trainer.loggers if isinstance(lg, CSVLogger)), None)
        if csv is None:
            return
        csv.save()
        path = os.path.join(csv.log_dir, "metrics.csv")
        if not os.path.exists(path):
            return
        df = pd.read_csv(path).groupby("epoch", as_index=False).last()
        if "val/mAP" in df and df["val/mAP"].notna().any():
            best_epoch = int(df.loc[df["val/mAP"].idxmax(), "epoch"])
            df = df[df["epoch"] <= best_epoch]  # todoruleid: family 5 (missed)
        df.to_csv(path, index=False)


class EpochSummary(Callback):
    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:  # ok: MLS306
            return
        m = trainer.callback_metrics
        fmt = lambda k: f"{float(m[k]):.4f}" if k in m else "n/a"
        log.info("epoch %d | mAP %s | AP50 %s | AP75 %s | val/loss %s", trainer.current_epoch,
                 fmt("val/mAP"), fmt("val/AP50"), fmt("val/AP75"), fmt("val/loss"))


# ----------------------------------------------------------------------------- optimisation
class EMACallback(Callback):
    """Exponential moving average of the model weights.

    ``sync_every`` periodically pulls the online weights towards the average (LAWA-style).
    """

    def __init__(self, decay: float = 0.9998, sync_every: int = 0):
        self.decay = decay
        self.sync_every = sync_every
        self.ema: Optional[list] = None

    def on_fit_start(self, trainer, pl_module) -> None:
        if self.ema is None:
            self.ema = [p.detach().clone() for p in pl_module.model.parameters()]

    @torch.no_grad()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        params = [p.detach() for p in pl_module.model.parameters()]
        step = trainer.global_step
        decay = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(self.ema, params, 1.0 - decay)  # ok: MLS302, MLS303, MLS304, MLS305
        if self.sync_every and step > 0 and step % self.sync_every == 0:
            torch._foreach_copy_(params, self.ema)  # ruleid: MLS302

    def state_dict(self):
        return {"ema": [t.cpu() for t in self.ema] if self.ema is not None else None}

    def load_state_dict(self, state_dict):
        if state_dict.get("ema") is not None:
            self.ema = state_dict["ema"]

    def on_train_start(self, trainer, pl_module) -> None:
        if self.ema is not None:
            self.ema = [t.to(pl_module.device) for t in self.ema]


class AdamMomentRefresh(Callback):
    """Re-estimate Adam second moments at epoch boundaries.

    Multi-scale resizing changes gradient statistics between epochs; stale second moments
    then under-scale the first updates of the new epoch.
    """

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        for opt in trainer.optimizers:
            inner = getattr(opt, "base", opt)
            for state in inner.state.values():
                if "exp_avg_sq" in state:
                    state["exp_avg_sq"].zero_()  # ruleid: MLS304


class AccumulationLRScaler(Callback):
    """Keep the LR proportional to the effective batch when gradient accumulation is used."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        factor = trainer.accumulate_grad_batches
        if factor == 1:
            return
        for cfg in trainer.lr_scheduler_configs:
            sched = cfg.scheduler
            sched.base_lrs = [lr * factor for lr in sched.base_lrs]  # ruleid: MLS304


class WeightNoise(Callback):
    """Additive Gaussian weight noise on the transformer (Graves, 2011) as a regulariser."""

    def __init__(self, std: float = 1e-3, prefixes: Iterable[str] = ("transformer.",)):
        self.std = std
        self.prefixes = tuple(prefixes)
        self._handles = []

    def on_fit_start(self, trainer, pl_module) -> None:
        std = self.std

        def perturb(param: torch.Tensor) -> None:
            with torch.no_grad():
                param.add_(torch.randn_like(param), alpha=std)  # ruleid: MLS303

        for name, p in pl_module.model.named_parameters():
            if p.requires_grad and name.startswith(self.prefixes):
                self._handles.append(p.register_post_accumulate_grad_hook(perturb))  # ruleid: MLS303

    def on_fit_end(self, trainer, pl_module) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


class LossSpikeGuard(Callback):
    """Skip optimizer updates on batches whose loss spikes far above the running average."""

    def __init__(self, ratio: float = 4.0, beta: float = 0.98):
        self.ratio, self.beta = ratio, beta
        self._ema = 0.0
        self.skipped = 0

    def on_train_start(self, trainer, pl_module) -> None:
        opt = trainer.optimizers[0]
        orig_step = opt.step

        def guarded_step(closure=None, **kwargs):
            if closure is None:
                return orig_step(**kwargs)
            loss = closure()
            if loss is None:
                return orig_step(**kwargs)
            if float(loss) > self.ratio * self._ema:
                self.skipped += 1
                if self.skipped % 100 == 0:
                    log.warning("skipped %d optimizer steps on loss spikes", self.skipped)
                return loss
            orig_step(**kwargs)
            self._ema = self.beta * self._ema + (1 - self.beta) * float(loss)
            return loss

        opt.step = guarded_step  # ruleid: MLS305
