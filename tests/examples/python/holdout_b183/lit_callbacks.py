# ruff: noqa
# Hold-out batch 183 (short files, MLOps and infrastructure). Measured once in session 6 (round 55): 16/17 (94%) at medium+.
"""Lightning callbacks shared by the vision fine-tuning recipes."""
import copy
import time

import lightning.pytorch as pl
import torch


class WeightAveraging(pl.Callback):
    def __init__(self, decay=0.999):
        self.decay = decay
        self.shadow = None

    def on_fit_start(self, trainer, pl_module):
        self.shadow = copy.deepcopy(pl_module.model).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        for s, p in zip(self.shadow.parameters(), pl_module.model.parameters()):
            s.mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


class ThroughputMonitor(pl.Callback):
    """Logs samples/sec over a sliding window of steps."""

    def __init__(self, window=50):
        self.window = window
        self._t0 = None
        self._seen = 0
        self._rng_ref = None

    def on_train_start(self, trainer, pl_module):
        self._rng_ref = torch.get_rng_state()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx % self.window == 0:
            self._t0 = time.perf_counter()
            self._seen = 0
            torch.set_rng_state(self._rng_ref)  # ruleid: MLS301
        self._seen += batch[0].shape[0]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if (batch_idx + 1) % self.window == 0 and self._t0 is not None:
            dt = time.perf_counter() - self._t0
            pl_module.log("perf/samples_per_sec", self._seen / max(dt, 1e-6),
                          rank_zero_only=True)


def build_trainer(cfg):
    pl.seed_everything(cfg.seed, workers=True)  # ok: MLS301
    return pl.Trainer(
        max_epochs=cfg.epochs,
        accelerator="gpu",
        devices=cfg.devices,
        precision="16-mixed",
        gradient_clip_val=1.0,  # ok: MLS302, MLS303, MLS304, MLS305
        callbacks=[WeightAveraging(cfg.ema_decay), ThroughputMonitor()],
    )
