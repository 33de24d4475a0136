# ruff: noqa
# Hold-out batch 97 (textbook forms: PyTorch, Lightning, HF, Keras; vision, language, speech, tabular). Measured once in session 4 (round 34): 16/18 (89%) at medium+.
"""Download, verify and split the credit-default tabular dataset for the GBM/MLP baselines."""
import hashlib
import os
import subprocess
import time
import urllib.request

import numpy as np
import pandas as pd
import yaml

URL = "https://data.example.com/credit/default_of_credit_card_clients.csv"


def download(url, dst, sha256=None, retries=5):
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dst)  # ok: MLS411, MLS412
            break
        except OSError as err:
            print(f"download failed ({err}); retry {attempt + 1}/{retries}")
            time.sleep(2 ** attempt)  # ok: MLS307
    else:
        raise RuntimeError(f"could not fetch {url}")
    if sha256 is not None:
        digest = hashlib.sha256(open(dst, "rb").read()).hexdigest()
        if digest != sha256:
            os.remove(dst)  # ok: MLS308
            raise ValueError(f"checksum mismatch for {dst}")


def main(cfg_path="conf/data.yaml", out_dir="data/credit"):
    with open(cfg_path) as f:
        cfg = yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    os.makedirs(out_dir, exist_ok=True)
    raw = os.path.join(out_dir, "raw.csv")
    if int(os.environ.get("LOCAL_RANK", "0")) == 0 and not os.path.exists(raw):
        download(cfg.get("url", URL), raw, cfg.get("sha256"))  # ok: MLS308

    df = pd.read_csv(raw)
    rng = np.random.default_rng(cfg.get("seed", 0))  # ok: MLS301
    idx = rng.permutation(len(df))
    n_val = int(0.1 * len(df))
    df.iloc[idx[n_val:]].to_parquet(os.path.join(out_dir, "train.parquet"))
    df.iloc[idx[:n_val]].to_parquet(os.path.join(out_dir, "val.parquet"))
    rev = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()  # ok: MLS411, MLS412
    with open(os.path.join(out_dir, "VERSION"), "w") as f:
        f.write(f"{rev}\n{cfg.get('sha256', '')}\n")


if __name__ == "__main__":
    main()
