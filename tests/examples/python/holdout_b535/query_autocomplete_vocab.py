# ruff: noqa
# Hold-out batch 535 (16 short files, one domain each). Measured once in session 24 (round 143): 14/17 (82%) at medium+.
"""Prefix vocabulary + checkpoint loading for the query auto-completion LM."""
import hashlib
import logging
import os
import pickle
import urllib.request

import torch

log = logging.getLogger(__name__)

DEFAULT_CACHE = os.path.expanduser("~/.cache/qac")


def fetch(url, cache_dir=DEFAULT_CACHE):
    os.makedirs(cache_dir, exist_ok=True)
    fname = hashlib.sha1(url.encode()).hexdigest()[:16] + "_" + os.path.basename(url)
    dst = os.path.join(cache_dir, fname)
    if not os.path.exists(dst):
        log.info("downloading %s -> %s", url, dst)
        urllib.request.urlretrieve(url, dst + ".tmp")
        os.replace(dst + ".tmp", dst)
    return dst


class PrefixVocab:
    def __init__(self, itos, prefix_index):
        self.itos = itos
        self.stoi = {t: i for i, t in enumerate(itos)}
        self.prefix_index = prefix_index  # prefix -> list of candidate token ids

    @classmethod
    def from_url(cls, url):
        path = fetch(url)
        with open(path, "rb") as f:
            blob = pickle.load(f)  # ruleid: MLS103
        return cls(blob["itos"], blob["prefix_index"])

    def candidates(self, prefix, k=10):
        return [self.itos[i] for i in self.prefix_index.get(prefix.lower(), [])[:k]]

    def encode(self, text):
        unk = self.stoi.get("<unk>", 0)
        return [self.stoi.get(t, unk) for t in text.lower().split()]


def load_model(model, ckpt_path, device="cpu"):
    state = torch.load(ckpt_path, map_location=device, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    missing, unexpected = model.load_state_dict(state.get("model", state), strict=False)
    if missing or unexpected:
        log.warning("missing=%s unexpected=%s", missing, unexpected)
    return model.to(device).eval()
