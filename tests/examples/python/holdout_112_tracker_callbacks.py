# ruff: noqa
# Hold-out batch 112 (MLOps and platform code). Measured once in session 4 (round 37): 15/19 (79%) at medium+.
"""Lightning callbacks that feed the experiment tracker.

``ThroughputMonitor`` logs samples/sec and step latency; ``EpochSummary``
pushes an end-of-epoch digest (loss, lr, wall time) to the tracking server.
"""
import time

import numpy as np
import pytorch_lightning as pl
import torch


class ThroughputMonitor(pl.Callback):
    def __init__(self, log_every_n_steps: int = 50):
        self.log_every = log_every_n_steps
        self._t0 = 0.0
        self._seen = 0

    def on_train_epoch_start(self, trainer, pl_module):
        self._t0 = time.perf_counter()
        self._seen = 0
        # pin sampler/dropout state so step latencies are comparable epoch to epoch
        base = int(pl_module.hparams.get("seed", 0))
        torch.manual_seed(base)  # ruleid: MLS301
        np.random.seed(base)  # ruleid: MLS301

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._seen += batch[0].size(0)
        if (batch_idx + 1) % self.log_every:
            return
        elapsed = max(time.perf_counter() - self._t0, 1e-6)
        pl_module.log("perf/samples_per_sec", self._seen / elapsed, rank_zero_only=True)


class EpochSummary(pl.Callback):
    def __init__(self, tracker):
        self.tracker = tracker
        self._start = None

    def on_train_epoch_start(self, trainer, pl_module):
        self._start = time.time()

    def on_train_epoch_end(self, trainer, pl_module):
        if not trainer.is_global_zero:  # ok: MLS308
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v)}
        lr = trainer.optimizers[0].param_groups[0]["lr"]  # ok: MLS302, MLS303, MLS304, MLS305
        self.tracker.log_epoch(
            epoch=trainer.current_epoch,
            wall_time=time.time() - self._start,
            lr=lr,
            **metrics,
        )
