# ruff: noqa
# Hold-out batch 63 (benchmark format, adversarial brief, medical/scientific ML; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 10/18 (56%) at medium+.
"""Cohort preparation: fetch the study manifest, build patient-level splits, cache volumes."""
import hashlib
import signal
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from sklearn.model_selection import GroupShuffleSplit

_STATE = {"done": [], "out": None}


def download(url: str, dst: Path, sha256: str, retries: int = 5) -> Path:
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dst)
            if hashlib.sha256(dst.read_bytes()).hexdigest() == sha256:
                return dst
        except OSError:
            pass
        time.sleep(min(60, 2 ** attempt))  # ok: MLS307
    raise RuntimeError(f"failed to fetch {url}")


def _flush_progress(signum, frame):
    pd.Series(_STATE["done"], name="series_uid").to_csv(_STATE["out"] / "progress.csv", index=False)
    sys.exit(0)  # ok: MLS307


def split_patients(manifest: pd.DataFrame, val_frac: float, test_frac: float, seed: int):
    gss = GroupShuffleSplit(n_splits=1, test_size=test_frac, random_state=seed)  # ok: MLS301
    dev_idx, test_idx = next(gss.split(manifest, groups=manifest["patient_id"]))
    dev = manifest.iloc[dev_idx]
    gss = GroupShuffleSplit(n_splits=1, test_size=val_frac / (1 - test_frac), random_state=seed)
    tr_idx, va_idx = next(gss.split(dev, groups=dev["patient_id"]))
    out = manifest.assign(split="test")
    out.loc[dev.index[tr_idx], "split"] = "train"
    out.loc[dev.index[va_idx], "split"] = "val"
    return out


def main(cfg_path: str):
    cfg = yaml.safe_load(Path(cfg_path).read_text())  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    out = Path(cfg["out_dir"]); out.mkdir(parents=True, exist_ok=True)
    _STATE["out"] = out
    signal.signal(signal.SIGTERM, _flush_progress)  # ok: MLS307
    manifest = pd.read_csv(download(cfg["manifest_url"], out / "manifest.csv", cfg["manifest_sha256"]))
    manifest = manifest[manifest["modality"].eq("CT") & manifest["slice_thickness"].le(3.0)]
    splits = split_patients(manifest, cfg["val_frac"], cfg["test_frac"], cfg["seed"])
    splits.to_csv(out / "splits.csv", index=False)
    for uid in splits["series_uid"]:
        vol = np.load(Path(cfg["raw_dir"]) / f"{uid}.npy", allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        np.save(out / f"{uid}.npy", vol.astype(np.float16))
        _STATE["done"].append(uid)
    print(splits.groupby("split")["patient_id"].nunique())


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "configs/cohort.yaml")
