# ruff: noqa
# Hold-out batch 71 (benchmark format, adversarial brief, lab codebase; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 12/18 (67%) at medium+.
"""Lightning callbacks for cluster runs: heartbeat file, throughput logging, SIGTERM checkpoint."""
import json
import os
import signal
import socket
import time
from pathlib import Path

import lightning.pytorch as pl


class ClusterHeartbeat(pl.Callback):
    """Writes a small JSON heartbeat that the lab's job monitor polls to detect hung ranks."""

    def __init__(self, path="heartbeat", interval_s=60.0):
        self.dir = Path(path)
        self.interval_s = interval_s
        self._last = 0.0
        self._t0 = None
        self._host = socket.gethostname()

    def setup(self, trainer, pl_module, stage):
        self.dir.mkdir(parents=True, exist_ok=True)
        signal.signal(signal.SIGTERM, lambda *_: trainer.save_checkpoint("last.ckpt"))  # ok: MLS307

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        dt = time.perf_counter() - self._t0
        step = trainer.global_step
        if trainer.is_global_zero and step % 50 == 0:  # ok: MLS308
            pl_module.log("perf/step_time", dt, rank_zero_only=True)
        now = time.monotonic()
        if now - self._last >= self.interval_s:
            rec = {"host": self._host, "rank": trainer.global_rank, "step": step, "dt": dt}
            (self.dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(rec))
            self._last = now
        if step and hash((self._host, step)) % 40009 == 0:  # ruleid: MLS308
            # node flagged by the monitor as degraded; leave so SLURM can reschedule us
            os._exit(0)  # ruleid: MLS307

    def on_train_end(self, trainer, pl_module):
        for f in self.dir.glob("rank*.json"):
            f.unlink(missing_ok=True)  # ok: MLS308
