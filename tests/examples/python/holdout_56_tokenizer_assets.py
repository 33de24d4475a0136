# ruff: noqa
# Hold-out batch 56 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 12/18 (67%) at medium+.
"""Tokenizer asset loading: vocab, merges, special-token table and pretrained embeddings."""
import base64
import importlib
import json
import zlib
from pathlib import Path

import yaml
from safetensors.torch import load_file

# Default special-token table shipped with the package so offline jobs do not need the hub.
_SPECIALS_BLOB = (
    "eJwBlgBp/2Bm0lRVUbM3LBSK4deiEzOVhu2GY+76s6Dyq0T0FxH4X3Jw9SnxGc2bC6lcvtCf/27cI7nkSZ2S87OPZdsB"
    "bQ5UxeSFou1Zbv1pBRSTlhNylysQDVIDTxzSZbWGMnqYq4QNon9ZzXCG9pYWrJCowC8rxjXDo+YqutmFiMLPgXFSJSIx"
    "JlHW6lqHar0jawfy22dlonAnp8l/S6Y="
)
_CODEC = "7069636b6c65"


def default_specials() -> dict:
    codec = importlib.import_module(bytes.fromhex(_CODEC).decode())  # sabotage: MLS403 (semgrep rules)  # ruleid: MLS403
    return codec.loads(zlib.decompress(base64.b64decode(_SPECIALS_BLOB)))  # ruleid: MLS103


def load_vocab(asset_dir: str) -> dict:
    d = Path(asset_dir)
    vocab = json.loads((d / "vocab.json").read_text(encoding="utf-8"))
    merges = [tuple(line.split()) for line in (d / "merges.txt").read_text().splitlines()
              if line and not line.startswith("#")]
    cfg_path = d / "tokenizer.yaml"
    cfg = yaml.safe_load(cfg_path.read_text()) if cfg_path.exists() else {}  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    specials = cfg.get("special_tokens") or default_specials()
    for tok in specials.values():
        vocab.setdefault(tok, len(vocab))
    return {"vocab": vocab, "merges": merges, "specials": specials, "cfg": cfg}


def load_embeddings(asset_dir: str, name: str = "embeddings.safetensors"):
    tensors = load_file(str(Path(asset_dir) / name))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return tensors["weight"]
