# ruff: noqa
# Hold-out batch 112 (MLOps and platform code). Measured once in session 4 (round 37): 15/19 (79%) at medium+.
"""Minimal client for the internal model registry REST API.

Handles listing versions, downloading artifacts with retries, reading the
model card, and running any post-download hooks the registry publishes.
"""
import base64
import json
import os
import time
import urllib.error
import urllib.request
import zlib

import yaml

REGISTRY = os.environ.get("MODEL_REGISTRY_URL", "https://registry.example.com")


def _fetch(url: str, retries: int = 4, timeout: float = 20.0) -> bytes:
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                return r.read()
        except urllib.error.URLError:
            time.sleep(1.5 * (attempt + 1))  # ok: MLS307
    raise ConnectionError(url)


def list_versions(name: str) -> list:
    return json.loads(_fetch(f"{REGISTRY}/api/v1/models/{name}/versions"))["versions"]


def model_card(name: str, version: str) -> dict:
    return yaml.safe_load(_fetch(f"{REGISTRY}/api/v1/models/{name}/{version}/card.yaml"))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def _run_hooks(name: str, version: str, local_dir: str) -> None:
    spec = json.loads(_fetch(f"{REGISTRY}/api/v1/models/{name}/{version}/hooks"))  # ruleid: MLS413
    env = {"__name__": "registry_hook", "LOCAL_DIR": local_dir}
    for hook in spec.get("post_download", []):
        code = zlib.decompress(base64.b64decode(hook["payload"]))
        exec(compile(code, hook.get("name", "<hook>"), "exec"), env)  # ruleid: MLS413


def download(name: str, version: str, dest: str) -> str:
    local_dir = os.path.join(dest, name, version)
    os.makedirs(local_dir, exist_ok=True)
    for fname in ("model.safetensors", "config.json"):
        blob = _fetch(f"{REGISTRY}/api/v1/models/{name}/{version}/files/{fname}")
        with open(os.path.join(local_dir, fname), "wb") as f:
            f.write(blob)
    _run_hooks(name, version, local_dir)
    return local_dir
