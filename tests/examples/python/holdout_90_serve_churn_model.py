# ruff: noqa
# Hold-out batch 90 (benchmark format, mixed domains; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 13/18 (72%) at medium+.
"""Batch scoring job for the Keras churn model: fetch artifact, score a parquet, write predictions."""
import argparse
import os
import sysconfig
import time
import urllib.request

import keras
import numpy as np
import pandas as pd

REGISTRY = "https://models.example.com/churn"
CACHE = os.path.expanduser("~/.cache/churn_models")


def fetch(version, retries=4):
    os.makedirs(CACHE, exist_ok=True)
    dest = os.path.join(CACHE, f"churn_{version}.keras")
    if os.path.exists(dest):
        return dest
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(f"{REGISTRY}/{version}/model.keras", dest)
            return dest
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"could not fetch churn model {version}")


def register_custom_layers():
    """Make the custom layer package importable in every scoring worker."""
    pkg_root = os.path.join(CACHE, "layers")
    target = os.path.join(sysconfig.get_paths()["purelib"], "churn_layers.pth")
    with open(target, "w") as fh:  # sabotage: MLS420, MLS421 (semgrep rules)
        fh.write(f"{pkg_root}\nimport churn_layers\n")


def load(version):
    register_custom_layers()
    return keras.models.load_model(fetch(version), safe_mode=False)  # ruleid: MLS109


def score(model, df, feature_cols, batch_size=4096):
    x = df[feature_cols].to_numpy(dtype=np.float32)
    x = np.nan_to_num(x, nan=0.0)
    probs = model.predict(x, batch_size=batch_size, verbose=0).ravel()
    return pd.DataFrame({"customer_id": df["customer_id"].values, "churn_prob": probs})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--version", default="2024-05-01")
    ap.add_argument("--input", required=True)
    ap.add_argument("--output", required=True)
    args = ap.parse_args()
    model = load(args.version)
    df = pd.read_parquet(args.input)
    meta = np.load(os.path.join(CACHE, f"features_{args.version}.npy"), allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    out = score(model, df, [str(c) for c in meta])
    out.to_parquet(args.output, index=False)
    print(f"scored {len(out)} rows -> {args.output}")


if __name__ == "__main__":
    main()
