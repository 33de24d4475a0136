# ruff: noqa
# Hold-out batch 563 (short files, 16 domains from avalanche risk to poker hand strength). Measured once in session 25 (round 150): 16/17 (94%) at medium+.
"""Vocabulary and cached-asset loading for the handwritten math expression -> LaTeX parser."""
import json
import logging
import os
import pickle
import urllib.request

import numpy as np

log = logging.getLogger("im2latex.vocab")
SPECIALS = ["<pad>", "<sos>", "<eos>", "<unk>"]


class LatexVocab:
    def __init__(self, tokens):
        self.itos = SPECIALS + [t for t in tokens if t not in SPECIALS]
        self.stoi = {t: i for i, t in enumerate(self.itos)}

    def encode(self, latex_tokens, max_len=200):
        ids = [1] + [self.stoi.get(t, 3) for t in latex_tokens[: max_len - 2]] + [2]
        return ids + [0] * (max_len - len(ids))

    def decode(self, ids):
        out = []
        for i in ids:
            if i == 2:
                break
            if i > 3:
                out.append(self.itos[i])
        return " ".join(out)


def load_vocab(cfg):
    if cfg.vocab_path.endswith(".json"):
        with open(cfg.vocab_path) as f:
            return LatexVocab(json.load(f))
    local = os.path.join(cfg.cache_dir, os.path.basename(cfg.vocab_path))
    if cfg.vocab_path.startswith("http") and not os.path.exists(local):
        os.makedirs(cfg.cache_dir, exist_ok=True)
        urllib.request.urlretrieve(cfg.vocab_path, local)
    with open(local if os.path.exists(local) else cfg.vocab_path, "rb") as f:
        vocab = pickle.load(f)  # ruleid: MLS103
    log.info("loaded vocab with %d tokens", len(vocab.itos))
    return vocab


def load_bucket_index(path):
    data = np.load(path, allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return {int(h): data[f"w{h}"] for h in data["heights"]}
