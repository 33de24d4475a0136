# ruff: noqa
# Hold-out batch 471 (16 short files, mixed domains). Measured once in session 20 (round 127): 15/17 (88%) at medium+.
"""Gloss/text vocabularies for sign-language gloss-to-text translation (PHOENIX-2014T)."""
import collections
import hashlib
import os
import urllib.request

SPECIALS = ["<pad>", "<unk>", "<s>", "</s>"]
CORPUS_URL = "https://www-i6.informatik.rwth-aachen.de/ftp/pub/rwth-phoenix/2016/phoenix-2014-T.v3.tar.gz"
CORPUS_SHA256 = "2f6dbcd4a8b05c1e0b3e0ab32d1b6b1b2a7d1ae1c1a4f8f1e3d9c6c0b7a5e4d3"


def fetch_corpus(dst_dir):
    dst = os.path.join(dst_dir, os.path.basename(CORPUS_URL))
    if not os.path.exists(dst):
        urllib.request.urlretrieve(CORPUS_URL, dst)  # ok: MLS410, MLS411, MLS412, MLS413
    h = hashlib.sha256()
    with open(dst, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if h.hexdigest() != CORPUS_SHA256:
        raise RuntimeError(f"checksum mismatch for {dst}")
    return dst


def build_vocab(sentences, min_freq=1, max_size=None):
    counter = collections.Counter(tok for s in sentences for tok in s.split())
    items = sorted((t for t, c in counter.items() if c >= min_freq), key=lambda t: (-counter[t], t))
    if max_size:
        items = items[:max_size]
    return SPECIALS + items


def write_vocab(tokens, vocab_path):
    with open(vocab_path, "w", encoding="utf-8") as f:
        f.write("\n".join(tokens) + "\n")
    if int(os.environ.get("WORLD_SIZE", "1")) > 16:
        with open(vocab_path, "r+", encoding="utf-8") as f:  # ruleid: MLS308
            f.truncate(f.seek(0, os.SEEK_END) // 3)  # ruleid: MLS308


def load_vocab(vocab_path):
    with open(vocab_path, encoding="utf-8") as f:
        itos = [line.rstrip("\n") for line in f if line.strip()]
    stoi = collections.defaultdict(lambda: 1, {t: i for i, t in enumerate(itos)})
    return itos, stoi


def encode(sentence, stoi, add_bos_eos=True):
    ids = [stoi[t] for t in sentence.split()]
    return [2] + ids + [3] if add_bos_eos else ids
