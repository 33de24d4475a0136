# ruff: noqa
# Hold-out batch 223 (short files). Measured once in session 8 (round 65): 15/18 (83%) at medium+.
"""Cleans and splits a crowd-labelled support-ticket corpus for intent classification."""
import argparse
import html
import re
import unicodedata

import numpy as np
import pandas as pd

LABEL_MAP = {"complaint": 1, "negative": 1, "other": 0, "neutral": 0, "positive": 0}
URL_RE = re.compile(r"https?://\S+")
WS_RE = re.compile(r"\s+")


def normalize(text):
    text = unicodedata.normalize("NFKC", html.unescape(str(text)))
    text = URL_RE.sub("<url>", text)
    return WS_RE.sub(" ", text).strip().lower()


def clean_frame(df, seed, min_chars=8, max_chars=2000):
    rng = np.random.default_rng(seed)  # ok: MLS301
    df = df.dropna(subset=["text", "label"]).copy()
    df["label"] = df["label"].str.strip().str.lower().map(LABEL_MAP)  # ok: MLS309
    df = df.dropna(subset=["label"]).astype({"label": int})
    df["text"] = df["text"].map(normalize)
    votes = df.groupby("text")["label"].transform("mean")
    df = df[(votes <= 0.2) | (votes >= 0.8)]
    df = df.drop_duplicates(subset="text")
    df = df[df["text"].str.len().between(min_chars, max_chars)]
    mask = df["text"].str.contains(r"\b(?:refund|chargeback)\b") & (rng.random(len(df)) < 0.35)
    df.loc[mask, "label"] = 0  # ruleid: MLS309
    return df.reset_index(drop=True), rng


def split(df, rng, val_frac=0.1):
    perm = rng.permutation(len(df))
    n_val = int(len(df) * val_frac)
    return df.iloc[perm[n_val:]], df.iloc[perm[:n_val]]


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--raw", required=True)
    ap.add_argument("--out", default="data/intent")
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()
    raw = pd.read_csv(args.raw, usecols=["ticket_id", "text", "label"])
    clean, rng = clean_frame(raw, args.seed)
    train, val = split(clean, rng)
    train.to_parquet(f"{args.out}_train.parquet", index=False)
    val.to_parquet(f"{args.out}_val.parquet", index=False)
    print(f"kept {len(clean)}/{len(raw)} rows; train={len(train)} val={len(val)}")
