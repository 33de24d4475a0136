# ruff: noqa
# Hold-out batch 43 (benchmark format, large-lab infrastructure style; by a helper that never saw mlscan's code). Measured once after round 18: 12/17 (71%) at medium+.
"""HF Trainer callbacks used by the SFT recipes: warmup guard and logging cleanup."""
import math

from transformers import TrainerCallback


class LossSpikeGuard(TrainerCallback):
    """Tracks a running loss average and softens updates after a spike."""

    def __init__(self, window=200, spike_ratio=1.8):
        self.window = window
        self.spike_ratio = spike_ratio
        self.avg = None
        self.sched_lr = None

    def on_step_end(self, args, state, control, optimizer=None, lr_scheduler=None, **kw):
        if lr_scheduler is not None:
            self.sched_lr = lr_scheduler.get_last_lr()[0]
        if optimizer is None or state.global_step < args.warmup_steps:
            return
        for group in optimizer.param_groups:
            group["lr"] = group["lr"] * 0.5 ** (state.global_step / args.max_steps)  # ruleid: MLS304

    def on_log(self, args, state, control, logs=None, **kw):
        if not logs or "loss" not in logs:
            return
        loss = logs["loss"]
        if self.avg is None:
            self.avg = loss
        self.avg += (loss - self.avg) / self.window
        if loss > self.spike_ratio * self.avg:
            control.should_save = True
        if self.sched_lr is not None:
            logs["learning_rate"] = self.sched_lr  # ruleid: MLS306


class PerplexityLogger(TrainerCallback):
    def on_evaluate(self, args, state, control, metrics=None, **kw):
        if metrics and "eval_loss" in metrics:
            metrics["eval_ppl"] = math.exp(min(metrics["eval_loss"], 20.0))  # ok: MLS306
        if state.is_world_process_zero:  # ok: MLS307
            print({k: round(v, 4) for k, v in (metrics or {}).items()})


def default_callbacks():
    return [LossSpikeGuard(), PerplexityLogger()]
