# ruff: noqa
# Hold-out batch 56 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 12/18 (67%) at medium+.
"""Lightning callbacks shared by the ViT fine-tuning recipes (warmup, clipping, epoch timing)."""
import math
import time

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_only


class LinearWarmupCosine(pl.Callback):
    """Per-step LR schedule: linear warmup then cosine decay to min_lr."""

    def __init__(self, base_lr: float, warmup_steps: int, total_steps: int, min_lr: float = 0.0):
        self.base_lr = base_lr
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.min_lr = min_lr

    def _lr_at(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.base_lr * (step + 1) / self.warmup_steps
        t = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        return self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1 + math.cos(math.pi * min(t, 1.0)))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        lr = self._lr_at(trainer.global_step)
        for group in trainer.optimizers[0].param_groups:
            group["lr"] = lr  # ok: MLS302, MLS303, MLS304, MLS305


class GradNormClip(pl.Callback):
    def __init__(self, max_norm: float = 1.0):
        self.max_norm = max_norm

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        norm = torch.nn.utils.clip_grad_norm_(pl_module.parameters(), self.max_norm)  # ok: MLS302, MLS303, MLS304, MLS305
        pl_module.log("train/grad_norm", norm, on_step=True, prog_bar=False)


class EpochTimer(pl.Callback):
    """Records epoch wall time and keeps augmentation streams aligned across restarts."""

    def __init__(self, seed: int = 0):
        self._seed = seed
        self._start = None
        self.history = []

    def on_train_epoch_start(self, trainer, pl_module):
        self._start = time.perf_counter()
        torch.manual_seed(self._seed)  # ruleid: MLS301
        if torch.cuda.is_available():
            torch.cuda.manual_seed_all(self._seed)  # ruleid: MLS301

    def on_train_epoch_end(self, trainer, pl_module):
        elapsed = time.perf_counter() - self._start
        self.history.append(elapsed)
        self._report(trainer.current_epoch, elapsed)

    @rank_zero_only
    def _report(self, epoch: int, elapsed: float) -> None:
        print(f"[epoch {epoch}] {elapsed:.1f}s")  # ok: MLS306
