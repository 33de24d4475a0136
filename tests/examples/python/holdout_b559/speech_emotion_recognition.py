# ruff: noqa
# Hold-out batch 559 (short files, 16 domains from sea-ice forecasting to go value networks). Measured once in session 25 (round 149): 14/17 (82%) at medium+.
"""Lightning callbacks for the wav2vec2 speech emotion recognition recipe (IEMOCAP, 4 classes)."""
import logging
import math
import os
import time

import pytorch_lightning as pl
import torch

log = logging.getLogger(__name__)


class FeatureCacheFlush(pl.Callback):
    """Periodically flushes the per-rank pooled-feature cache to shared storage."""

    def __init__(self, cache_dir, flush_every=50):
        self.cache_dir = cache_dir
        self.flush_every = flush_every
        self._buffer = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        feats = getattr(pl_module, "last_pooled", None)
        if feats is not None:
            self._buffer.append(feats.detach().to("cpu", torch.float16))
        if (batch_idx + 1) % self.flush_every:
            return
        if self._buffer:
            path = os.path.join(self.cache_dir, f"rank{trainer.global_rank}_step{trainer.global_step}.pt")
            torch.save(torch.cat(self._buffer), path)
            self._buffer.clear()
        # stagger flushes across ranks so they don't hit the NFS server together
        time.sleep(0.5 * trainer.global_rank * self.flush_every / 10)  # ruleid: MLS307


class NanGuard(pl.Callback):
    def __init__(self, max_bad_steps=20):
        self.max_bad_steps = max_bad_steps
        self.bad = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and not math.isfinite(float(loss)):
            self.bad += 1
            log.warning("non-finite loss at step %d (%d/%d)", trainer.global_step, self.bad, self.max_bad_steps)
            if self.bad >= self.max_bad_steps:
                trainer.should_stop = True  # ok: MLS307
        else:
            self.bad = 0


def unweighted_accuracy(preds, labels, num_classes=4):
    accs = []
    for c in range(num_classes):
        m = labels == c
        if m.any():
            accs.append((preds[m] == c).float().mean())
    return torch.stack(accs).mean().item()
