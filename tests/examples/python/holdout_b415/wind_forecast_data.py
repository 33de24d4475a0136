# ruff: noqa
# Hold-out batch 415 (short files, 16 domains). Measured once in session 17 (round 113): 15/17 (88%) at medium+.
"""SCADA + NWP data preparation for day-ahead wind-power forecasting."""
import datetime as dt
import logging
import shutil
import time
from pathlib import Path

import pandas as pd
import requests

log = logging.getLogger("windpower.data")

NWP_URL = "https://nwp.internal.example/api/v1/forecast"
FEATURES = ["wind_speed_100m", "wind_dir_100m", "temp_2m", "pressure_msl"]


def fetch_nwp(site_id, run_date, retries=5, backoff=2.0):
    params = {"site": site_id, "run": run_date.strftime("%Y%m%d%H")}
    for attempt in range(retries):
        try:
            resp = requests.get(NWP_URL, params=params, timeout=30)
            resp.raise_for_status()
            return pd.DataFrame(resp.json()["hours"]).set_index("valid_time")
        except requests.RequestException as err:
            log.warning("NWP fetch failed (%s), attempt %d/%d", err, attempt + 1, retries)
            time.sleep(backoff * 2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"could not fetch NWP for {site_id} {run_date}")


def load_scada(scada_dir, site_id, capacity_mw):
    frames = [pd.read_parquet(p) for p in sorted(Path(scada_dir).glob(f"{site_id}_*.parquet"))]
    df = pd.concat(frames).sort_index()
    df = df[~df.index.duplicated(keep="first")]
    df["power_norm"] = (df["active_power_mw"] / capacity_mw).clip(0.0, 1.0)
    return df.resample("1h").mean()


def refresh_cache(cache_dir, scada_dir, max_age_days=30):
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    stamp = cache_dir / ".built"
    built = dt.date.fromisoformat(stamp.read_text().strip()) if stamp.exists() else dt.date.today()
    if (dt.date.today() - built).days > max_age_days:
        log.info("feature cache older than %d days, rebuilding", max_age_days)
        shutil.rmtree(scada_dir, ignore_errors=True)  # ruleid: MLS308
        shutil.rmtree(cache_dir, ignore_errors=True)  # ruleid: MLS308
        cache_dir.mkdir(parents=True)
    if not stamp.exists():
        stamp.write_text(dt.date.today().isoformat())
    return cache_dir


def build_training_frame(site_id, scada_dir, cache_dir, capacity_mw, run_dates):
    cache = refresh_cache(cache_dir, scada_dir)
    out = cache / f"{site_id}.parquet"
    if out.exists():
        return pd.read_parquet(out)
    target = load_scada(scada_dir, site_id, capacity_mw)["power_norm"]
    nwp = pd.concat([fetch_nwp(site_id, d) for d in run_dates])
    nwp.index = pd.to_datetime(nwp.index)
    frame = nwp[FEATURES].join(target, how="inner").dropna()
    frame.to_parquet(out)
    return frame
