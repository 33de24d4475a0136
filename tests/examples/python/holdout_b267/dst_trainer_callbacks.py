# ruff: noqa
# Hold-out batch 267 (short files). Measured once in session 9 (round 76): 14/18 (78%) at medium+.
"""TrainerCallbacks used by the dialogue-state-tracking fine-tuning job (HF Trainer).

- JointGoalLogger: logs joint goal accuracy per turn depth after each evaluation.
- WallClockBudget: stops cleanly before the scheduler's time limit.
- HangWatch: nudges the hang detector when a step takes unusually long.
"""
import faulthandler
import os
import signal
import sys
import time

from transformers import TrainerCallback

faulthandler.enable(file=sys.stderr)


class JointGoalLogger(TrainerCallback):
    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if metrics and state.is_world_process_zero:  # ok: MLS306
            depth = {k: v for k, v in metrics.items() if k.startswith("eval_jga_turn")}
            print(f"[step {state.global_step}] jga={metrics.get('eval_jga', 0):.4f} {depth}")


class WallClockBudget(TrainerCallback):
    def __init__(self, budget_hours=23.5):
        self.deadline = time.time() + budget_hours * 3600

    def on_step_end(self, args, state, control, **kwargs):
        if time.time() > self.deadline:
            control.should_save = True
            control.should_training_stop = True  # ok: MLS307
        return control


class HangWatch(TrainerCallback):
    def __init__(self, factor=8.0):
        self.factor, self.last, self.ema = factor, None, None

    def on_step_begin(self, args, state, control, **kwargs):
        self.last = time.time()

    def on_step_end(self, args, state, control, **kwargs):
        dt = time.time() - self.last
        self.ema = dt if self.ema is None else 0.98 * self.ema + 0.02 * dt
        if state.global_step > 200 and dt > self.factor * self.ema:
            # ask the process to dump its Python stacks for the hang report
            os.kill(os.getpid(), signal.SIGUSR1)  # ruleid: MLS307
        return control
