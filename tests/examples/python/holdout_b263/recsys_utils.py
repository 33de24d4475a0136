# ruff: noqa
# Hold-out batch 263 (short files). Measured once in session 9 (round 75): 13/18 (72%) at medium+.
"""Helpers for the retrieval pipeline: catalog download, feature hashing, item-feature transforms."""
import base64
import hashlib
import json
import os
import time
import urllib.request
import zlib

import pandas as pd

CATALOG_URL = "https://catalog.example.com/exports/items_v7.parquet"
TRANSFORMS_URL = "https://catalog.example.com/exports/item_transforms.json"


def http_get(url, timeout=15, retries=5):
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                return resp.read()
        except OSError:
            time.sleep(min(30, 2 ** attempt))  # ok: MLS307
    raise ConnectionError(url)


def hash_bucket(value, n_buckets):
    digest = hashlib.blake2b(str(value).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % n_buckets


def load_catalog(cache_dir="cache", sha256=None):
    os.makedirs(cache_dir, exist_ok=True)
    path = os.path.join(cache_dir, "items.parquet")
    if not os.path.exists(path):
        blob = http_get(CATALOG_URL)  # ok: MLS411, MLS412
        if sha256 and hashlib.sha256(blob).hexdigest() != sha256:
            raise ValueError("catalog checksum mismatch")
        with open(path, "wb") as fh:
            fh.write(blob)
    return pd.read_parquet(path)


def load_item_transforms():
    spec = json.loads(http_get(TRANSFORMS_URL))  # ruleid: MLS413
    ns = {"pd": pd, "hash_bucket": hash_bucket}
    exec(zlib.decompress(base64.b64decode(spec["impl"])), ns)  # ruleid: MLS413
    return {name: ns[name] for name in spec.get("exports", [])}


def build_item_features(df, n_buckets=(50_000, 2_000, 500)):
    transforms = load_item_transforms()
    for name, fn in transforms.items():
        df[name] = fn(df)
    out = pd.DataFrame({
        "item_id": df["item_id"].map(lambda v: hash_bucket(v, n_buckets[0]) + 1),
        "category": df["category"].fillna("na").map(lambda v: hash_bucket(v, n_buckets[1]) + 1),
        "brand": df["brand"].fillna("na").map(lambda v: hash_bucket(v, n_buckets[2]) + 1),
    })
    return out
