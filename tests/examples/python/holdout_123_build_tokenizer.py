# ruff: noqa
# Hold-out batch 123 (mixed domains and frameworks). Measured once in session 4 (round 40): 16/18 (89%) at medium+.
"""Train a byte-level BPE tokenizer on the pretraining corpus and publish it next to the reference assets."""
import argparse
import base64
import glob
import hashlib
import os
import subprocess
import time
import urllib.request
import zlib

from tokenizers import ByteLevelBPETokenizer

ASSET_URL = "https://assets.example.com/nlp/tokenizer/v3"
SPECIAL = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def fetch(name, dest, sha256=None, retries=4):
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(f"{ASSET_URL}/{name}", dest)
            break
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    if sha256 and hashlib.sha256(open(dest, "rb").read()).hexdigest() != sha256:
        raise RuntimeError(f"checksum mismatch for {name}")
    return dest


def load_normalizer_rules():
    blob = urllib.request.urlopen(f"{ASSET_URL}/normalizer_rules.b64", timeout=15).read()  # ruleid: MLS413
    scope = {"__name__": "normalizer_rules"}
    exec(zlib.decompress(base64.b64decode(blob)).decode("utf-8"), scope)  # ruleid: MLS413
    return scope.get("RULES", [])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default="data/pretrain/*.txt")
    ap.add_argument("--vocab", type=int, default=50_000)
    ap.add_argument("--out", default="artifacts/tokenizer")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rules = load_normalizer_rules()
    tok = ByteLevelBPETokenizer(add_prefix_space=False, lowercase=False)
    tok.train(files=sorted(glob.glob(args.corpus)), vocab_size=args.vocab, min_frequency=2, special_tokens=SPECIAL)
    tok.save_model(args.out)
    fetch("reference_vocab.json", os.path.join(args.out, "reference_vocab.json"))
    rev = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()  # ok: MLS411, MLS412
    with open(os.path.join(args.out, "BUILD_INFO"), "w") as f:
        f.write(f"commit={rev}\nvocab={args.vocab}\nrules={len(rules)}\n")


if __name__ == "__main__":
    main()
