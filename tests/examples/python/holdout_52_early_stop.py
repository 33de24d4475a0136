# ruff: noqa
# Hold-out batch 52 (benchmark format, independent grader's set; by a helper that never saw mlscan's code). Measured once after round 22: 13/17 (76%) at medium+.
"""Training-loop callbacks: early stopping, best-model tracking, periodic saves."""
import json
import os
import time

import wandb


class EarlyStopping:
    def __init__(self, patience=5, min_delta=1e-4, mode="max"):
        self.patience, self.min_delta, self.mode = patience, min_delta, mode
        self.best = None
        self.bad_epochs = 0
        self.should_stop = False

    def step(self, value):
        improved = self.best is None or (
            value > self.best + self.min_delta if self.mode == "max" else value < self.best - self.min_delta)
        if improved:
            self.best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs >= self.patience:
                self.should_stop = True  # ok: MLS307
        return improved


class MetricTracker:
    def __init__(self, out_dir, is_main=True, save_every_s=1800):
        self.out_dir, self.is_main = out_dir, is_main
        self.best_acc = 0.0
        self.save_every_s = save_every_s
        self._last_save = time.time()

    def on_eval(self, step, acc, loss):
        self.best_acc = max(self.best_acc, acc)
        if self.is_main:
            wandb.log({"val/acc": acc, "val/loss": loss, "val/best_acc": self.best_acc}, step=step)  # ok: MLS306
        with open(os.path.join(self.out_dir, "eval_history.jsonl"), "a") as fh:
            fh.write(json.dumps({"step": step, "acc": round(acc, 5), "loss": loss}) + "\n")  # ok: MLS306

    def maybe_save(self, save_fn, step):
        if time.time() - self._last_save > self.save_every_s:  # ok: MLS308
            save_fn(step)
            self._last_save = time.time()


def run(train_epoch, evaluate, save_fn, out_dir, epochs=100, is_main=True):
    stopper, tracker = EarlyStopping(patience=8), MetricTracker(out_dir, is_main)
    for epoch in range(epochs):
        step = train_epoch(epoch)
        acc, loss = evaluate()
        tracker.on_eval(step, acc, loss)
        if stopper.step(acc) and is_main:
            save_fn(step, best=True)
        tracker.maybe_save(save_fn, step)
        if stopper.should_stop:
            break
    return tracker.best_acc
