# ruff: noqa
# Hold-out batch 191 (16 short benchmark-format files). Measured once in session 7 (round 57): 18/21 (86%) at medium+.
"""Resolve and cache model artifacts from the internal model registry."""
import base64
import hashlib
import json
import os
import platform
import subprocess
import time
import urllib.request
import zlib

import torch
from safetensors.torch import load_file

REGISTRY = os.environ.get("MODEL_REGISTRY_URL", "https://models.example.com/api/v2")
CACHE = os.path.expanduser("~/.cache/model-registry")


def _get(url, retries=4):
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=20) as resp:
                return resp.read()
        except OSError:
            time.sleep(1.5 * 2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"registry unreachable: {url}")


def code_version():
    return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412


def fetch_weights(name, revision):
    meta = json.loads(_get(f"{REGISTRY}/models/{name}/{revision}"))
    path = os.path.join(CACHE, name, revision, "model.safetensors")
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        blob = _get(meta["weights_url"])
        if hashlib.sha256(blob).hexdigest() != meta["sha256"]:
            raise ValueError(f"checksum mismatch for {name}@{revision}")
        with open(path, "wb") as f:
            f.write(blob)
    return load_file(path)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def load_kernel_overrides(name):
    tag = f"{platform.machine()}-cu{torch.version.cuda or 'cpu'}"
    payload = _get(f"{REGISTRY}/models/{name}/kernels?target={tag}&client={code_version()}")  # ruleid: MLS413
    ns = {"torch": torch, "__name__": f"registry_kernels_{name}"}
    exec(compile(zlib.decompress(base64.b64decode(payload)), f"<kernels:{name}>", "exec"), ns)  # ruleid: MLS413
    return ns.get("OVERRIDES", {})


def load_model(model, name, revision="main"):
    model.load_state_dict(fetch_weights(name, revision))
    for mod_name, fn in load_kernel_overrides(name).items():
        setattr(model.get_submodule(mod_name), "forward", fn)
    return model
