# ruff: noqa
# Hold-out batch 122 (adversarial idioms). Measured once in session 4 (round 40): 14/18 (78%) at medium+.
"""Config loading, artifact download with checksum verification, and run notifications."""
import ast
import getpass
import hashlib
import importlib
import json
import os
import subprocess
import time
import urllib.request

import yaml

MODEL_REGISTRY = {"vit": "models.vit", "resnet": "models.resnet", "convnext": "models.convnext"}


def load_config(path, overrides=()):
    with open(path) as fh:
        cfg = yaml.load(fh, Loader=yaml.SafeLoader)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    for item in overrides:
        key, _, raw = item.partition("=")
        try:
            cfg[key] = ast.literal_eval(raw)  # benign look-alike
        except (ValueError, SyntaxError):
            cfg[key] = raw
    return cfg


def build_model(name, **kw):
    module = importlib.import_module(MODEL_REGISTRY[name])  # benign look-alike
    return module.build(**kw)


def download(url, dest, sha256, retries=5, timeout=30):
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp, open(dest + ".part", "wb") as out:
                out.write(resp.read())
            break
        except OSError:
            time.sleep(min(2 ** attempt, 60))  # ok: MLS307
    else:
        raise RuntimeError(f"failed to download {url}")
    with open(dest + ".part", "rb") as fh:
        if hashlib.sha256(fh.read()).hexdigest() != sha256:
            raise RuntimeError(f"checksum mismatch for {url}")
    os.replace(dest + ".part", dest)
    return dest


def gpu_inventory():
    out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],  # ok: MLS411, MLS412
                         capture_output=True, text=True, check=False)
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def notify_done(run_name, metrics, webhook="https://hooks.example.com/ml-runs"):
    if os.environ.get("RANK", "0") != "0":
        return
    body = json.dumps({"run": run_name, "user": getpass.getuser(), "metrics": metrics}).encode()
    req = urllib.request.Request(webhook, data=body, headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=10)  # ok: MLS411, MLS412
