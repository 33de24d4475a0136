# ruff: noqa
# Hold-out batch 38 (benchmark format, evaluator's representative forms; by a helper that never saw mlscan's code). Measured once after round 15: 15/16 (94%) at medium+.
"""Prepare the churn tabular dataset: cleaning, label mapping, splits and cached arrays."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

LABEL_MAP = {"active": 0, "churned": 1, "paused": 0}


def load_config(path: str) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def clean(df: pd.DataFrame) -> pd.DataFrame:
    df = df.drop_duplicates(subset="customer_id")
    df = df[df["tenure_months"].between(0, 240)]
    df["label"] = df["status"].map(LABEL_MAP)  # ok: MLS309
    df = df.dropna(subset=["label"])
    df.loc[df["monthly_spend"] < 0, "monthly_spend"] = np.nan
    df["monthly_spend"] = df["monthly_spend"].fillna(df["monthly_spend"].median())
    return df


def split(df: pd.DataFrame, seed: int, val_frac: float = 0.1, test_frac: float = 0.1):
    df = df.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # ok: MLS301
    n = len(df)
    n_test, n_val = int(n * test_frac), int(n * val_frac)
    return df.iloc[n_test + n_val:], df.iloc[n_test:n_test + n_val], df.iloc[:n_test]


def to_arrays(df: pd.DataFrame, features: list[str]):
    x = df[features].to_numpy(dtype=np.float32)
    y = df["label"].to_numpy(dtype=np.int64)
    return x, y


def main(cfg_path: str = "configs/churn.yaml"):
    cfg = load_config(cfg_path)
    out = Path(cfg["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    cache = out / "train.npz"
    if cache.exists():
        arrays = np.load(cache, allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        print("cached:", {k: arrays[k].shape for k in arrays.files})
        return
    df = clean(pd.read_parquet(cfg["raw_path"]))
    train, val, test = split(df, cfg.get("seed", 0))
    for name, part in (("train", train), ("val", val), ("test", test)):
        x, y = to_arrays(part, cfg["features"])
        np.savez_compressed(out / f"{name}.npz", x=x, y=y)
    stats = {"n_train": len(train), "pos_rate": float(train["label"].mean())}
    (out / "stats.json").write_text(json.dumps(stats, indent=2))


if __name__ == "__main__":
    main()
