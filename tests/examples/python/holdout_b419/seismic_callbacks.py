# ruff: noqa
# Hold-out batch 419 (short files, 16 domains). Measured once in session 17 (round 114): 15/17 (88%) at medium+.
"""Lightning callbacks and waveform fetching for a PhaseNet/EQTransformer-style picker."""
import logging
import os
import signal
import time

import numpy as np
import pytorch_lightning as pl
import torch

logger = logging.getLogger(__name__)


def fetch_waveform(client, network, station, start, end, retries=4, backoff=2.0):
    """Pull a 3-component trace from the FDSN client, retrying transient failures."""
    for attempt in range(retries):
        try:
            st = client.get_waveforms(network, station, "*", "HH?", start, end)
            st.merge(fill_value=0).detrend("demean").filter("bandpass", freqmin=1.0, freqmax=45.0)
            return np.stack([tr.data.astype(np.float32) for tr in st[:3]])
        except Exception as exc:  # network / service errors are common on FDSN
            logger.warning("fetch %s.%s failed (%s), attempt %d", network, station, exc, attempt + 1)
            time.sleep(backoff * (2 ** attempt))  # ok: MLS307
    raise RuntimeError(f"could not fetch {network}.{station}")


class GPUMemoryGuard(pl.Callback):
    """Stop a worker that is about to OOM so the elastic agent can restart it cleanly."""

    def __init__(self, max_fraction=0.05, check_every=50):
        self.max_fraction = max_fraction
        self.check_every = check_every

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx % self.check_every or not torch.cuda.is_available():
            return
        total = torch.cuda.get_device_properties(pl_module.device).total_memory
        used = torch.cuda.memory_reserved(pl_module.device) / total
        if trainer.global_rank > 0 and used > self.max_fraction:
            logger.error("rank %d reserved %.1f%% of device memory", trainer.global_rank, 100 * used)
            os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307


class PickMetricsLogger(pl.Callback):
    def __init__(self, tol_samples=10):
        self.tol = tol_samples

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        pred_p, true_p = outputs["p_pick"], outputs["p_true"]
        hit = (torch.abs(pred_p - true_p) <= self.tol).float().mean()
        pl_module.log("val/p_pick_recall", hit, sync_dist=True, on_epoch=True)
