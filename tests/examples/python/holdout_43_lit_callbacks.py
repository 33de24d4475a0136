# ruff: noqa
# Hold-out batch 43 (benchmark format, large-lab infrastructure style; by a helper that never saw mlscan's code). Measured once after round 18: 12/17 (71%) at medium+.
"""Lightning callbacks shared by the pretraining recipes: EMA weights and throughput logging."""
import time

import lightning.pytorch as pl
import torch


class EMAWeights(pl.Callback):
    def __init__(self, decay=0.9999):
        self.decay = decay
        self.shadow = None

    def on_fit_start(self, trainer, pl_module):
        self.shadow = {k: v.detach().clone() for k, v in pl_module.state_dict().items()
                       if v.dtype.is_floating_point}

    @torch.no_grad()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        for k, v in pl_module.state_dict().items():
            if k in self.shadow:
                self.shadow[k].mul_(self.decay).add_(v, alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


class ThroughputMonitor(pl.Callback):
    def __init__(self, log_every=50, seed=1234):
        self.log_every = log_every
        self.seed = seed
        self._t0 = None
        self._tokens = 0

    def on_train_epoch_start(self, trainer, pl_module):
        self._t0 = time.perf_counter()
        self._tokens = 0
        # keep per-rank streams aligned after elastic restarts
        torch.cuda.manual_seed_all(self.seed + trainer.global_rank)  # ruleid: MLS301

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._tokens += batch["input_ids"].numel()
        if (batch_idx + 1) % self.log_every == 0 and trainer.is_global_zero:  # ok: MLS307
            dt = time.perf_counter() - self._t0
            pl_module.log("perf/tokens_per_s", self._tokens / max(dt, 1e-6), rank_zero_only=True)


def build_callbacks(cfg):
    pl.seed_everything(cfg.seed, workers=True)  # ok: MLS301
    return [EMAWeights(cfg.ema_decay), ThroughputMonitor(cfg.log_every, cfg.seed),
            pl.callbacks.LearningRateMonitor("step")]
