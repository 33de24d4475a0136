# ruff: noqa
# Hold-out batch 105 (textbook forms, company ML engineer style). Measured once in session 4 (round 36): 14/17 (82%) at medium+.
"""Download the raw NER export, convert IOB1 tags to IOB2, split by document and write parquet shards."""
import json
import os
import subprocess
import time

import numpy as np
import pandas as pd
import requests
import yaml

RAW_URL = "https://data.example.com/ner/export_v3.jsonl"


def download(url, dest, retries=5, backoff=3.0):
    for attempt in range(1, retries + 1):
        try:
            resp = requests.get(url, timeout=60)  # ok: MLS411, MLS412
            resp.raise_for_status()
            with open(dest, "wb") as f:
                f.write(resp.content)
            return dest
        except requests.RequestException:
            if attempt == retries:
                raise
            time.sleep(backoff * attempt)  # ok: MLS307


def iob1_to_iob2(tags):
    out = []
    for i, t in enumerate(tags):
        if t.startswith("I-") and (i == 0 or tags[i - 1][2:] != t[2:]):
            t = "B-" + t[2:]  # ok: MLS309
        out.append(t)
    return out


def main(config_path="configs/data.yaml"):
    with open(config_path) as f:
        cfg = yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    os.makedirs(cfg["out_dir"], exist_ok=True)
    raw = download(RAW_URL, os.path.join(cfg["out_dir"], "raw.jsonl"))
    df = pd.read_json(raw, lines=True)
    df["tags"] = df["tags"].apply(iob1_to_iob2)
    df = df[df["tokens"].str.len() > 0].reset_index(drop=True)

    rng = np.random.default_rng(cfg.get("seed", 0))  # ok: MLS301
    docs = df["doc_id"].unique()
    rng.shuffle(docs)
    n_val = int(len(docs) * cfg.get("val_frac", 0.1))
    val_docs = set(docs[:n_val])
    df["split"] = np.where(df["doc_id"].isin(val_docs), "validation", "train")
    for split, part in df.groupby("split"):
        part.drop(columns="split").to_parquet(os.path.join(cfg["out_dir"], f"{split}.parquet"), index=False)

    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()  # ok: MLS411, MLS412
    meta = {"source": RAW_URL, "commit": commit, "counts": df["split"].value_counts().to_dict()}
    with open(os.path.join(cfg["out_dir"], "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)


if __name__ == "__main__":
    main()
