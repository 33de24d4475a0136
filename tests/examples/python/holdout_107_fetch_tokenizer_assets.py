# ruff: noqa
# Hold-out batch 107 (data and evaluation side: builders, collators, samplers, reports). Measured once in session 4 (round 36): 10/17 (59%) at medium+.
"""Fetch tokenizer assets (vocab, merges, normalizer rules) for the multilingual
preprocessing jobs from the internal asset mirror and verify checksums."""
import base64
import hashlib
import os
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import yaml

MIRROR = os.environ.get("TOK_ASSET_MIRROR", "https://assets.example.com/tokenizers")
FILES = ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")


def _get(url, retries=4, timeout=30):
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                return resp.read()
        except (urllib.error.URLError, TimeoutError):
            time.sleep(1.5 * (attempt + 1))  # ok: MLS307
    raise RuntimeError(f"giving up on {url}")


def fetch_tokenizer(name, dest_root="~/.cache/tok_assets"):
    dest = Path(dest_root).expanduser() / name
    dest.mkdir(parents=True, exist_ok=True)
    manifest = yaml.safe_load(_get(f"{MIRROR}/{name}/manifest.yaml"))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    for fn in FILES:
        data = _get(f"{MIRROR}/{name}/{fn}")
        digest = hashlib.sha256(data).hexdigest()
        if digest != manifest["sha256"][fn]:
            raise ValueError(f"{name}/{fn}: checksum mismatch ({digest[:12]})")
        (dest / fn).write_bytes(data)
    return dest


def load_normalizer(name):
    """Language-specific normalisation rules compiled by the data team."""
    blob = _get(f"{MIRROR}/{name}/normalizer.rules")  # ruleid: MLS413
    scope = {"__name__": f"normalizer_{name}"}
    exec(zlib.decompress(base64.b64decode(blob)).decode("utf-8"), scope)  # ruleid: MLS413
    return scope["normalize"]


def prepare(names):
    out = {}
    for name in names:
        path = fetch_tokenizer(name)
        out[name] = (path, load_normalizer(name))
        print(f"{name}: assets in {path}")
    return out


if __name__ == "__main__":
    prepare(os.environ.get("TOK_LANGS", "xlmr-base,mt5-small").split(","))
