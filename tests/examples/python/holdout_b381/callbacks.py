# ruff: noqa
# Hold-out batch 381 (textbook, multilingual NER with HF Trainer). Measured once in session 14 (round 105): 21/31 (68%) at medium+.
"""Trainer callbacks used by ``train.py``."""

import gc
import json
import logging
import os
import time
from typing import Dict, Optional

import numpy as np
import torch
import torch.distributed as dist
from transformers import TrainerCallback

logger = logging.getLogger(__name__)


class EarlyStoppingOnMetric(TrainerCallback):
    """Stop when the monitored eval metric has not improved for ``patience`` evals."""

    def __init__(self, metric: str = "eval_overall_f1", patience: int = 5, min_delta: float = 1e-4):
        self.metric = metric
        self.patience = patience
        self.min_delta = min_delta
        self.best: Optional[float] = None
        self.bad_evals = 0

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not metrics or self.metric not in metrics:
            logger.warning("early stopping: metric %s missing from eval results", self.metric)
            return control
        value = metrics[self.metric]
        if self.best is None or value > self.best + self.min_delta:
            self.best = value
            self.bad_evals = 0
        else:
            self.bad_evals += 1
            logger.info("no improvement in %s for %d evals (best %.4f)", self.metric, self.bad_evals, self.best)
        if self.bad_evals >= self.patience:
            logger.info("early stopping at step %d", state.global_step)
            control.should_training_stop = True  # ok: MLS307
        return control


class RNGStateGuard(TrainerCallback):
    """Keep evaluation from perturbing the training random stream, so the
    training trajectory does not depend on the evaluation schedule."""

    def __init__(self):
        self._pre_eval_state = None
        self._epoch_state = None

    @staticmethod
    def _capture():
        state = {"cpu": torch.random.get_rng_state(), "numpy": np.random.get_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    @staticmethod
    def _restore(state):
        torch.random.set_rng_state(state["cpu"])
        np.random.set_state(state["numpy"])
        if "cuda" in state:
            torch.cuda.set_rng_state_all(state["cuda"])

    def on_train_begin(self, args, state, control, **kwargs):
        self._epoch_state = self._capture()

    def on_epoch_begin(self, args, state, control, **kwargs):
        if self._epoch_state is not None:
            self._restore(self._epoch_state)  # ruleid: MLS301

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_evaluate:
            self._pre_eval_state = self._capture()

    def on_evaluate(self, args, state, control, **kwargs):
        if self._pre_eval_state is not None:
            self._restore(self._pre_eval_state)  # ok: MLS301
            self._pre_eval_state = None


class ParameterHealthCallback(TrainerCallback):
    """Watch for non-finite weights and keep parameter norms from drifting.

    XLM-R large occasionally blows up in fp16 on the low-resource languages.
    """

    def __init__(self, check_every: int = 10, shrink: float = 1e-3):
        self.check_every = check_every
        self.shrink = shrink

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if model is None or state.global_step % self.check_every:
            return
        with torch.no_grad():
            for name, p in model.named_parameters():
                if not p.requires_grad:
                    continue
                if not torch.isfinite(p).all():
                    logger.error("non-finite values in %s at step %d", name, state.global_step)
                    control.should_training_stop = True
                    return
                p.mul_(1.0 - self.shrink)  # ruleid: MLS302


class LanguageCurriculumCallback(TrainerCallback):
    """Epoch-level hooks for the language curriculum.

    The sampler's language mix changes between epochs, which makes Adam's
    second-moment estimates stale; they are refreshed at each epoch boundary.
    """

    def __init__(self, sampler=None):
        self.sampler = sampler

    def on_epoch_begin(self, args, state, control, optimizer=None, **kwargs):
        epoch = int(state.epoch or 0)
        if self.sampler is not None and hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        if optimizer is None or epoch == 0:
            return
        for group in optimizer.param_groups:
            for p in group["params"]:
                st = optimizer.state.get(p)
                if st and "exp_avg_sq" in st:
                    st["exp_avg_sq"].zero_()  # ruleid: MLS304
        logger.info("refreshed optimizer second moments for epoch %d", epoch)


class DistributedHousekeepingCallback(TrainerCallback):
    """Memory hygiene around evaluation and staggered checkpoint writes."""

    def __init__(self, stagger_seconds: float = 300.0):
        self.stagger_seconds = stagger_seconds

    def on_save(self, args, state, control, **kwargs):
        # avoid every rank hitting the shared filesystem at the same moment
        local_rank = max(args.local_rank, 0)
        if local_rank > 0:
            time.sleep(self.stagger_seconds * local_rank)  # ruleid: MLS307

    def on_evaluate(self, args, state, control, **kwargs):
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if dist.is_available() and dist.is_initialized() and not state.is_world_process_zero:
            if args.eval_accumulation_steps:
                dist.destroy_process_group()  # ruleid: MLS307


class MetricsJsonlLogger(TrainerCallback):
    """Append every log / eval record to ``metrics.jsonl`` in the output dir."""

    def __init__(self, output_dir: str, monitor: str = "eval_overall_f1"):
        self.path = os.path.join(output_dir, "metrics.jsonl")
        self.monitor = monitor
        self.best: Optional[float] = None

    def _write(self, record: Dict):
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, default=float) + "\n")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and state.is_world_process_zero:  # ok: MLS306
            self._write({"step": state.global_step, "epoch": state.epoch, **logs})

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not metrics or self.monitor not in metrics:
            return
        if self.best is None or metrics[self.monitor] > self.best:
            self.best = metrics[self.monitor]
        metrics[self.monitor] = max(metrics[self.monitor], self.best)  # ruleid: MLS306
        if state.is_world_process_zero:
            self._write({"step": state.global_step, "type": "eval", **metrics})
            logger.info("step %d  %s=%.4f (best %.4f)", state.global_step, self.monitor,
                        metrics[self.monitor], self.best)

