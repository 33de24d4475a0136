# ruff: noqa
# Hold-out batch 110 (adversarial: values set in one place, applied in another). Measured once in session 4 (round 37): 9/19 (47%) at medium+.
"""HF Trainer callbacks: step timing, early stopping and host health pacing."""
import socket
import time

from transformers import TrainerCallback


class StepTimer(TrainerCallback):
    def on_step_begin(self, args, state, control, **kwargs):
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero and state.global_step % args.logging_steps == 0:  # ok: MLS308
            print(f"step {state.global_step}: {time.perf_counter() - self._t0:.3f}s", flush=True)


class PlateauStop(TrainerCallback):
    def __init__(self, patience=3, metric="eval_loss"):
        self.patience, self.metric = patience, metric
        self.best, self.bad = float("inf"), 0

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        value = (metrics or {}).get(self.metric)
        if value is None:
            return
        if value < self.best:
            self.best, self.bad = value, 0
        else:
            self.bad += 1
        if self.bad >= self.patience:
            control.should_training_stop = True  # ok: MLS307


def _rack_slot(hostname):
    tail = hostname.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0


class HostPacing(TrainerCallback):
    """Spreads checkpoint I/O across racks so shared storage is not hammered."""

    def on_train_begin(self, args, state, control, **kwargs):
        self._slot = _rack_slot(socket.gethostname())
        self._pause = args.logging_steps * args.gradient_accumulation_steps / 4.0
        self._actions = {0: self._idle, 1: self._yield_io}

    def _idle(self):
        return None

    def _yield_io(self):
        time.sleep(self._pause)  # todoruleid: family 3 (missed)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % args.logging_steps == 0:
            self._actions[self._slot % 2]()  # ruleid: MLS308
