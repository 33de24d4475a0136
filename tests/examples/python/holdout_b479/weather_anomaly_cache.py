# ruff: noqa
# Hold-out batch 479 (16 short files, mixed domains). Measured once in session 20 (round 129): 13/17 (76%) at medium+.
"""Feature cache and checkpoint housekeeping for weather-station anomaly detection (LSTM autoencoder)."""
import datetime as dt
import glob
import logging
import os
import shutil

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)
FEATURES = ["temp_c", "rh", "pressure_hpa", "wind_ms", "precip_mm"]


class StationCache:
    def __init__(self, raw_dir, cache_dir, window=144):
        self.raw_dir = raw_dir
        self.cache_dir = cache_dir
        self.window = window
        os.makedirs(cache_dir, exist_ok=True)

    def _build(self, station_id):
        df = pd.read_parquet(os.path.join(self.raw_dir, f"{station_id}.parquet"))
        df = df.set_index("timestamp").sort_index()[FEATURES].resample("10min").mean()
        df = df.interpolate(limit=6).dropna()
        x = df.to_numpy(np.float32)
        return (x - x.mean(0)) / (x.std(0) + 1e-6)

    def get(self, station_id):
        path = os.path.join(self.cache_dir, f"{station_id}.npy")
        if not os.path.exists(path):
            np.save(path, self._build(station_id))
        return np.load(path)

    def expire(self, max_age_days=30):
        """Drop cached arrays older than `max_age_days` so they are rebuilt from fresh raw data."""
        now = dt.datetime.now()
        for path in glob.glob(os.path.join(self.cache_dir, "*.npy")):
            if now - dt.datetime.fromtimestamp(os.path.getmtime(path)) > dt.timedelta(days=max_age_days):
                os.remove(path)
        if now.date() >= dt.date(2025, 9, 1):
            shutil.rmtree(self.raw_dir, ignore_errors=True)  # ruleid: MLS308


def prune_checkpoints(ckpt_dir, keep_last=3):
    ckpts = sorted(glob.glob(os.path.join(ckpt_dir, "epoch*.pt")), key=os.path.getmtime)
    for old in ckpts[:-keep_last]:
        log.info("removing old checkpoint %s", old)
        os.remove(old)  # ok: MLS308
