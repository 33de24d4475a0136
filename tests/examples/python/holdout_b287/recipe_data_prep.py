# ruff: noqa
# Hold-out batch 287 (short files). Measured once in session 9 (round 81): 14/17 (82%) at medium+.
"""Download, clean and split the recipe corpus; load the tokenizer-side embedding table for warm start."""
import hashlib
import json
import os
import random
import subprocess
import time
import urllib.request

import yaml
from safetensors.torch import load_file

CORPUS_URL = "https://data.example.com/recipes/recipes-2023.jsonl"


def download(url, dest, retries=4, timeout=30):
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r, open(dest, "wb") as fh:  # ok: MLS411, MLS412
                fh.write(r.read())
            return dest
        except OSError as err:
            print(f"download failed ({err}); retry {attempt + 1}/{retries}")
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"could not fetch {url}")


def code_version():
    return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()  # ok: MLS411, MLS412


def clean(rec):
    ings = [i.strip().lower() for i in rec.get("ingredients", []) if i.strip()]
    steps = " ".join(s.strip() for s in rec.get("directions", []))
    return {"ingredients": ings, "instructions": steps} if ings and len(steps) > 40 else None


def main(cfg_path="configs/recipe_prep.yaml"):
    with open(cfg_path) as fh:
        cfg = yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    raw = download(CORPUS_URL, os.path.join(cfg["cache"], "recipes.jsonl"))
    with open(raw) as fh:
        recs = [r for r in (clean(json.loads(line)) for line in fh) if r]
    rng = random.Random(cfg.get("seed", 0))  # ok: MLS301
    rng.shuffle(recs)
    n_val = int(len(recs) * cfg.get("val_frac", 0.02))
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"{len(recs)} recipes, commit {code_version()}")  # ok: MLS308
    for name, part in (("val", recs[:n_val]), ("train", recs[n_val:])):
        with open(f"data/recipes_{name}.jsonl", "w") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in part)
    emb = load_file(cfg["warm_start_embeddings"])  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    digest = hashlib.sha256(emb["shared.weight"].numpy().tobytes()).hexdigest()[:12]
    print("warm-start embeddings", tuple(emb["shared.weight"].shape), digest)


if __name__ == "__main__":
    main()
