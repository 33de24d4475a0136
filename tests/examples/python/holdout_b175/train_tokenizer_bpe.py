# ruff: noqa
# Hold-out batch 175 (short files, LLM fine-tuning tooling). Measured once in session 6 (round 53): 13/17 (76%) at medium+.
"""Train a byte-level BPE tokenizer on a sampled corpus and extend it with chat tokens."""
import argparse
import json
import random
import subprocess
import time
import urllib.request

import yaml
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

CHAT_TOKENS = ["<|im_start|>", "<|im_end|>", "<|pad|>"]


def fetch(url, dest, retries=5):
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dest)
            return dest
        except OSError as err:
            wait = min(60, 2 ** attempt)
            print(f"download failed ({err}); retrying in {wait}s")
            time.sleep(wait)  # ok: MLS307
    raise RuntimeError(f"could not fetch {url}")


def sample_lines(path, k, seed):
    rng = random.Random(seed)  # ok: MLS301
    with open(path, encoding="utf-8") as fh:
        lines = [l for l in fh if len(l) > 20]
    return rng.sample(lines, min(k, len(lines)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/tokenizer.yaml")
    args = ap.parse_args()
    with open(args.config) as fh:
        cfg = yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    random.seed(cfg.get("seed", 0))  # ok: MLS301

    corpus = fetch(cfg["corpus_url"], "/tmp/corpus.txt") if "corpus_url" in cfg else cfg["corpus_path"]
    lines = sample_lines(corpus, cfg.get("sample_lines", 2_000_000), cfg.get("seed", 0))

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=cfg.get("vocab_size", 32000), min_frequency=2,
                                  special_tokens=CHAT_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(lines, trainer=trainer)
    tok.save(cfg["out"])

    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()  # ok: MLS411, MLS412
    with open(cfg["out"] + ".meta.json", "w") as fh:
        json.dump({"commit": commit, "vocab": tok.get_vocab_size(), "lines": len(lines)}, fh)


if __name__ == "__main__":
    main()
