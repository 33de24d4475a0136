# ruff: noqa
# Hold-out batch 439 (short files, 16 domains). Measured once in session 18 (round 119): 13/17 (76%) at medium+.
"""Near-duplicate removal for training images using 64-bit perceptual hashes (pHash)."""
import argparse
import os
import urllib.request

import imagehash
import joblib
import numpy as np
from PIL import Image


def compute_hashes(paths):
    out = np.zeros(len(paths), dtype=np.uint64)
    for i, p in enumerate(paths):
        with Image.open(p) as im:
            h = imagehash.phash(im.convert("L"), hash_size=8)
        out[i] = int(str(h), 16)
    return out


def load_reference_index(spec, cache_dir="~/.cache/dedup"):
    """Reference hashes of eval/test images; accepts a local .npz, a local .joblib or a URL."""
    if spec.startswith(("http://", "https://")):
        local = os.path.join(os.path.expanduser(cache_dir), os.path.basename(spec))
        os.makedirs(os.path.dirname(local), exist_ok=True)
        if not os.path.exists(local):
            urllib.request.urlretrieve(spec, local)
        spec = local
    if spec.endswith(".npz"):
        with np.load(spec, allow_pickle=False) as z:  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
            return z["hashes"].astype(np.uint64), list(z["paths"])
    index = joblib.load(spec)  # ruleid: MLS103
    return np.asarray(index["hashes"], dtype=np.uint64), index["paths"]


def hamming(a, b):
    x = np.bitwise_xor(a[:, None], b[None, :])
    return np.unpackbits(x.view(np.uint8).reshape(*x.shape, 8), axis=-1).sum(-1)


def find_duplicates(train_hashes, ref_hashes, max_dist=6, chunk=2048):
    dup = np.zeros(len(train_hashes), dtype=bool)
    for s in range(0, len(train_hashes), chunk):
        d = hamming(train_hashes[s:s + chunk], ref_hashes)
        dup[s:s + chunk] = (d <= max_dist).any(1)
    return dup


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train-list", required=True)
    ap.add_argument("--reference", required=True)
    ap.add_argument("--max-dist", type=int, default=6)
    ap.add_argument("--out", default="train_dedup.txt")
    args = ap.parse_args()
    paths = [l.strip() for l in open(args.train_list) if l.strip()]
    ref, _ = load_reference_index(args.reference)
    dup = find_duplicates(compute_hashes(paths), ref, args.max_dist)
    with open(args.out, "w") as f:
        f.writelines(p + "\n" for p, d in zip(paths, dup) if not d)
    print(f"kept {len(paths) - dup.sum()} / {len(paths)} images ({dup.sum()} near-duplicates of eval)")


if __name__ == "__main__":
    main()
