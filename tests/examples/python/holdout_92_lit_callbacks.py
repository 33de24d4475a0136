# ruff: noqa
# Hold-out batch 92 (benchmark format, vision model zoo; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 17/19 (89%) at medium+.
"""Lightning callbacks shared by the zoo recipes: weight EMA and a throughput meter."""
import copy
import time

import torch
import lightning.pytorch as pl


class EMACallback(pl.Callback):
    def __init__(self, decay=0.99996, warmup_steps=2000):
        self.decay = decay
        self.warmup_steps = warmup_steps
        self.ema = None
        self._backup = None

    def on_fit_start(self, trainer, pl_module):
        self.ema = copy.deepcopy(pl_module.model).eval().requires_grad_(False)

    @torch.no_grad()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        d = min(self.decay, (1 + step) / (self.warmup_steps + step))
        for e, p in zip(self.ema.parameters(), pl_module.model.parameters()):
            e.mul_(d).add_(p.detach(), alpha=1.0 - d)  # ok: MLS302, MLS303, MLS304, MLS305

    @torch.no_grad()
    def on_validation_start(self, trainer, pl_module):
        self._backup = [p.detach().clone() for p in pl_module.model.parameters()]
        for p, e in zip(pl_module.model.parameters(), self.ema.parameters()):
            p.data.copy_(e)  # ok: MLS302, MLS303, MLS304, MLS305

    @torch.no_grad()
    def on_validation_end(self, trainer, pl_module):
        for p, b in zip(pl_module.model.parameters(), self._backup):
            p.data.copy_(b)  # ok: MLS302, MLS303, MLS304, MLS305
        self._backup = None


class ThroughputMeter(pl.Callback):
    """Logs images/sec; snapshots RNG so timing syncs don't perturb stochastic depth."""

    def __init__(self, log_every=50):
        self.log_every = log_every

    def on_train_epoch_start(self, trainer, pl_module):
        self._t0 = time.perf_counter()
        self._seen = 0
        self._rng = torch.get_rng_state()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._seen += batch[0].shape[0]
        if batch_idx and batch_idx % self.log_every == 0:
            torch.cuda.synchronize()
            ips = self._seen * trainer.world_size / (time.perf_counter() - self._t0)
            pl_module.log("perf/img_per_sec", ips, rank_zero_only=True)
            torch.set_rng_state(self._rng)  # ruleid: MLS301
