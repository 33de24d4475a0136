# ruff: noqa
# Hold-out batch 99 (applied ML: speech, recsys, CTR, ranking, fraud, video). Measured once in session 4 (round 34): 15/17 (88%) at medium+.
"""Feature-transform plugins and weight loading for the search ranking service.

Rankers can be extended with feature transforms published to the model
registry; this module resolves a transform name to a callable (cached per
process) and loads LambdaMART-distilled neural ranker weights.
"""
import base64
import importlib
import pickle
import urllib.request
import zlib

import torch
from safetensors.torch import load_file

REGISTRY_URL = "https://models.example.com/ltr/transforms"
_CACHE = {}


def load_ranker_weights(model, path):
    if path.endswith(".safetensors"):
        state = load_file(path)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise ValueError(f"unexpected keys in {path}: {unexpected[:5]}")
    return missing


def _fetch(name, timeout=10):
    with urllib.request.urlopen(f"{REGISTRY_URL}/{name}.bin", timeout=timeout) as resp:  # ruleid: MLS413
        return resp.read()


def resolve_transform(name):
    if name in _CACHE:
        return _CACHE[name]
    if name.startswith("builtin:"):
        module = importlib.import_module("ltr.transforms")  # benign look-alike
        fn = getattr(module, name.split(":", 1)[1])
    else:
        blob = _fetch(name)  # ruleid: MLS413
        header, body = blob[:4], blob[4:]
        if header == b"PYC1":
            namespace = {}
            exec(zlib.decompress(base64.b64decode(body)), namespace)  # ruleid: MLS413
            fn = namespace["transform"]
        else:
            fn = pickle.loads(body)  # ruleid: MLS103, MLS413
    _CACHE[name] = fn
    return fn


def apply_transforms(features, names):
    """features: dict[str, torch.Tensor] for one query's candidate list."""
    for name in names:
        features = resolve_transform(name)(features)
    return features
