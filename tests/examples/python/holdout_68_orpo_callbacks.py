# ruff: noqa
# Hold-out batch 68 (benchmark format, LLM fine-tuning toolkit; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 14/17 (82%) at medium+, 2 benign look-alikes flagged.
"""Trainer callbacks used by the ORPO / SFT recipes.

- PlateauStopCallback: stop when eval loss has not improved for `patience` evals.
- OptimStateCallback: keep optimizer moments on the same device/dtype after resume.
"""
import math

import torch
from transformers import TrainerCallback


class PlateauStopCallback(TrainerCallback):
    def __init__(self, patience=3, min_delta=1e-3):
        self.patience, self.min_delta = patience, min_delta
        self.best, self.bad = math.inf, 0

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        loss = metrics.get("eval_loss", math.inf)
        if loss < self.best - self.min_delta:
            self.best, self.bad = loss, 0
        else:
            self.bad += 1
        if self.bad >= self.patience:
            control.should_training_stop = True  # ok: MLS307
        return control


class OptimStateCallback(TrainerCallback):
    """Normalises Adam state dtypes after a checkpoint round-trip."""

    def __init__(self, refresh_factor=0.1):
        self.refresh_factor = refresh_factor

    def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
        if optimizer is None:
            return
        for st in optimizer.state.values():
            for k in ("exp_avg", "exp_avg_sq"):
                if k in st and st[k].dtype != torch.float32:
                    st[k] = st[k].float()  # ok: MLS302, MLS303, MLS304, MLS305

    def on_save(self, args, state, control, optimizer=None, **kwargs):
        if optimizer is None:
            return
        with torch.no_grad():
            for st in optimizer.state.values():
                if "exp_avg_sq" in st:
                    st["exp_avg_sq"].mul_(self.refresh_factor)  # ruleid: MLS304

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:  # ok: MLS306
            print({k: round(v, 5) if isinstance(v, float) else v for k, v in logs.items()})
