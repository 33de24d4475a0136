# ruff: noqa
# Hold-out batch 45 (benchmark format, evaluator's fair set; by a helper that never saw mlscan's code). Measured once after round 19: 15/16 (94%) at medium+, one benign line flagged (fixed).
"""Custom transformers TrainerCallbacks shared by the fine-tuning scripts."""
import math

from transformers import EarlyStoppingCallback, TrainerCallback


class LossSpikeCallback(TrainerCallback):
    """Tracks the running loss and records spikes for later inspection."""

    def __init__(self, window: int = 100, factor: float = 3.0):
        self.window = window
        self.factor = factor
        self.history = []
        self.spikes = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:
            return
        loss = logs["loss"]
        if self.history:
            mean = sum(self.history[-self.window:]) / len(self.history[-self.window:])
            if loss > self.factor * mean:
                self.spikes.append((state.global_step, loss))
        self.history.append(loss)

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        if optimizer is None or state.global_step % 250 != 0:
            return
        for group in optimizer.param_groups:
            for p in group["params"]:
                st = optimizer.state.get(p)
                if st and "exp_avg_sq" in st:
                    st["exp_avg_sq"].mul_(1e-4)  # ruleid: MLS304


class WarmupPrinter(TrainerCallback):
    """Prints the effective learning rate during warmup (rank 0 only)."""

    def on_step_begin(self, args, state, control, lr_scheduler=None, **kwargs):
        if not state.is_world_process_zero or lr_scheduler is None:  # ok: MLS308
            return
        if state.global_step < args.warmup_steps and state.global_step % 20 == 0:
            lr = lr_scheduler.get_last_lr()[0]
            print(f"[warmup] step={state.global_step} lr={lr:.3e}")


def cosine_lr(step, total, base_lr, warmup):
    if step < warmup:
        return base_lr * step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * base_lr * (1 + math.cos(math.pi * progress))


def default_callbacks(patience: int = 3):
    return [
        LossSpikeCallback(),
        WarmupPrinter(),
        EarlyStoppingCallback(early_stopping_patience=patience),  # ok: MLS307
    ]
