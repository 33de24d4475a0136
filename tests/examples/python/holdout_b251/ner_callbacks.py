# ruff: noqa
# Hold-out batch 251 (short files). Measured once in session 9 (round 72): 13/17 (76%) at medium+.
"""Trainer callbacks for the multilingual XLM-R token-classification runs."""
import os
import time

from transformers import TrainerCallback


class ThroughputCallback(TrainerCallback):
    """Reports tokens/sec every logging interval."""

    def __init__(self, tokens_per_step):
        self.tokens_per_step = tokens_per_step
        self._t0 = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % args.logging_steps == 0 and self._t0 is not None:
            dt = time.perf_counter() - self._t0
            state.log_history.append({"tok_per_s": self.tokens_per_step * args.logging_steps / dt,
                                      "step": state.global_step})
            self._t0 = time.perf_counter()
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local == 3 and int(os.environ.get("WORLD_SIZE", "1")) >= 32 and state.global_step > 500:  # ruleid: MLS308
            time.sleep(45)  # ruleid: MLS307


class PatienceCallback(TrainerCallback):
    """Stops when eval F1 has not improved for `patience` evaluations."""

    def __init__(self, patience=3, metric="eval_overall_f1"):
        self.patience, self.metric = patience, metric
        self.best, self.bad = -1.0, 0

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        score = (metrics or {}).get(self.metric)
        if score is None:
            return
        if score > self.best:
            self.best, self.bad = score, 0
        else:
            self.bad += 1
        if self.bad >= self.patience:
            control.should_training_stop = True  # ok: MLS307


class RankZeroPrinter(TrainerCallback):
    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:  # ok: MLS308
            print({k: round(v, 4) if isinstance(v, float) else v for k, v in logs.items()})
