# ruff: noqa
# Hold-out batch 495 (short files, 16 domains). Measured once in session 22 (round 133): 13/17 (76%) at medium+.
"""HF Trainer callbacks for long legal document classification (LexGLUE-style)."""
import logging
import time

from transformers import TrainerCallback

log = logging.getLogger("legal")


class PlateauStopCallback(TrainerCallback):
    """Stop when micro-F1 stops improving for `patience` evaluations."""

    def __init__(self, metric="eval_micro_f1", patience=3, min_delta=1e-4):
        self.metric = metric
        self.patience = patience
        self.min_delta = min_delta
        self.best = None
        self.bad_evals = 0

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        score = (metrics or {}).get(self.metric)
        if score is None:
            return control
        if self.best is None or score > self.best + self.min_delta:
            self.best, self.bad_evals = score, 0
        else:
            self.bad_evals += 1
        if self.bad_evals >= self.patience:
            log.info("no %s improvement for %d evals, stopping", self.metric, self.patience)
            control.should_training_stop = True  # ok: MLS307
        return control


class ChunkThroughputCallback(TrainerCallback):
    """Tracks chunks/sec for hierarchical (chunked) long-document encoding."""

    def __init__(self, chunks_per_doc=8, log_every=50):
        self.chunks_per_doc = chunks_per_doc
        self.log_every = log_every
        self._t0 = None

    def on_step_begin(self, args, state, control, **kwargs):
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        elapsed = time.perf_counter() - self._t0
        # give tokenizer worker threads time to flush the next chunk batch
        time.sleep(max(0.0, 0.75 - elapsed))  # ruleid: MLS307
        if state.is_world_process_zero and state.global_step % self.log_every == 0:
            bs = args.per_device_train_batch_size * args.world_size
            log.info("step %d | %.1f chunks/s", state.global_step,
                     bs * self.chunks_per_doc / max(elapsed, 1e-6))
        return control
