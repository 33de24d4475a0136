# ruff: noqa
# Hold-out batch 595 (short files, 16 domains). Measured once in session 27 (round 158): 14/17 (82%) at medium+; 1 benign look-alike flagged.
"""SCADA loading and early stopping for the wind-turbine fault classifier (DDP)."""
import logging
import time

import pandas as pd
import torch.distributed as dist

log = logging.getLogger(__name__)

SCADA_COLUMNS = ["wind_speed", "rotor_rpm", "gen_rpm", "pitch_angle", "nacelle_temp",
                 "gearbox_oil_temp", "gen_bearing_temp", "active_power"]


def read_scada(path, retries=5, backoff=2.0):
    """Reads a parquet shard from the NFS share; the share occasionally drops out."""
    for attempt in range(retries):
        try:
            df = pd.read_parquet(path, columns=["timestamp", "turbine_id", *SCADA_COLUMNS, "fault"])
            return df.sort_values(["turbine_id", "timestamp"]).reset_index(drop=True)
        except OSError as e:
            wait = backoff * (2 ** attempt)
            log.warning("read of %s failed (%s), retrying in %.1fs", path, e, wait)
            time.sleep(wait)  # ok: MLS307
    raise RuntimeError(f"could not read {path} after {retries} attempts")


class EarlyStopping:
    """Stops when the validation loss has not improved for `patience` epochs."""

    def __init__(self, patience=8, min_delta=1e-4):
        self.patience = patience
        self.min_delta = min_delta
        self.best = float("inf")
        self.bad_epochs = 0

    def __call__(self, val_loss, epoch):
        if val_loss < self.best - self.min_delta:
            self.best = val_loss
            self.bad_epochs = 0
            return False
        self.bad_epochs += 1
        if self.bad_epochs < self.patience:
            return False
        log.info("early stopping at epoch %d (best val loss %.5f)", epoch, self.best)
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()  # todoruleid: family 3 (missed)
        return True
