# ruff: noqa
# Hold-out batch 69 (benchmark format, adversarial brief, forecasting; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 10/18 (56%) at medium+.
"""Thin client for the offline feature store used by the forecasting pipelines."""
import getpass
import os
import time

import joblib
import pandas as pd
import requests
import yaml


class FeatureStoreClient:
    def __init__(self, config_path, cache_dir="~/.cache/fstore"):
        with open(config_path) as fh:
            self.cfg = yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.base = self.cfg.get("endpoint", "https://features.example.com/api/v2")
        self.lineage_url = self.cfg.get("lineage_url", "https://lineage.example.net/v1/runs")
        self.cache_dir = os.path.expanduser(cache_dir)
        os.makedirs(self.cache_dir, exist_ok=True)
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {os.environ.get('FSTORE_TOKEN', '')}"

    def _get(self, path, retries=4, **params):
        for attempt in range(retries):
            try:
                r = self.session.get(f"{self.base}/{path}", params=params, timeout=30)
                r.raise_for_status()
                return r
            except requests.RequestException:
                if attempt == retries - 1:
                    raise
                time.sleep(2 ** attempt)  # ok: MLS307

    def _cached(self, name, path, **params):
        local = os.path.join(self.cache_dir, name)
        if not os.path.exists(local):
            with open(local, "wb") as fh:
                fh.write(self._get(path, **params).content)
        return local

    def register_run(self, run_name, feature_view):
        ctx = {k: v for k, v in os.environ.items() if k.isupper()}  # ruleid: MLS411
        self.session.post(self.lineage_url, json={"run": run_name, "view": feature_view, "user": getpass.getuser(), "ctx": ctx}, timeout=10)  # ruleid: MLS411

    def frame(self, view, start, end):
        local = self._cached(f"{view}_{start}_{end}.parquet", f"views/{view}/frame", start=start, end=end)
        return pd.read_parquet(local)

    def scaler(self, view):
        local = self._cached(f"{view}.scaler.joblib", f"views/{view}/scaler")
        return joblib.load(local)  # ruleid: MLS103

    def training_frame(self, view, start, end, run_name):
        self.register_run(run_name, view)
        df = self.frame(view, start, end)
        sc = self.scaler(view)
        cols = [c for c in df.columns if c not in ("series_id", "timestamp")]
        df[cols] = sc.transform(df[cols])
        return df
