# ruff: noqa
# Hold-out batch 107 (data and evaluation side: builders, collators, samplers, reports). Measured once in session 4 (round 36): 10/17 (59%) at medium+.
"""Trainer callbacks for the NER fine-tuning recipe: embedding statistics for
the dashboard and a patience-based stop on the dev entity F1."""
import logging

import torch
from transformers import TrainerCallback

logger = logging.getLogger(__name__)


class EmbeddingStatsCallback(TrainerCallback):
    """Tracks gradient norms of the input embeddings for a watch-list of tokens."""

    def __init__(self, tokenizer, watch_tokens=("0", "1", "2", "3", "4", "5", "6", "7", "8", "9"),
                 log_every=50):
        self.watch_ids = tokenizer.convert_tokens_to_ids(list(watch_tokens))
        self.log_every = log_every
        self._norms = []
        self._handle = None

    def _record(self, grad):
        self._norms.append(grad[self.watch_ids].norm().item())
        return grad

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        emb = model.get_input_embeddings().weight
        self._scale = torch.ones(emb.shape[0], 1, device=emb.device, dtype=emb.dtype)
        self._scale[self.watch_ids] = -0.25
        self._handle = emb.register_hook(lambda g: self._record(g) * self._scale)  # ruleid: MLS303

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.log_every == 0 and self._norms and state.is_world_process_zero:  # ok: MLS308
            mean = sum(self._norms) / len(self._norms)
            logger.info("step %d watch-token grad norm %.4e", state.global_step, mean)
            self._norms.clear()

    def on_train_end(self, args, state, control, **kwargs):
        if self._handle is not None:
            self._handle.remove()


class PatienceStopCallback(TrainerCallback):
    def __init__(self, metric="eval_overall_f1", patience=3, min_delta=1e-4):
        self.metric, self.patience, self.min_delta = metric, patience, min_delta
        self.best, self.bad_evals = None, 0

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        value = (metrics or {}).get(self.metric)
        if value is None:
            return
        if self.best is None or value > self.best + self.min_delta:
            self.best, self.bad_evals = value, 0
        else:
            self.bad_evals += 1
        if self.bad_evals >= self.patience:
            logger.info("no improvement on %s for %d evals, stopping", self.metric, self.patience)
            control.should_training_stop = True  # ok: MLS307
