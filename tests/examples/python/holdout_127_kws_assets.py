# ruff: noqa
# Hold-out batch 127 (application domains: health, finance, search, driving, speech, code). Measured once in session 4 (round 41): 18/21 (86%) at medium+.
"""Asset resolution for the keyword-spotting (wake word) trainer.

Pulls the versioned front-end (log-mel featurizer config) and the negative-phrase
bank from the shared asset server, with a local cache under ~/.cache/kws.
"""
import base64
import json
import os
import pickle
import time
import urllib.error
import urllib.request
import zlib

ASSET_INDEX = "https://assets.example.com/kws/v3/index.json"
CACHE = os.path.expanduser("~/.cache/kws")


def _get(url, retries=4, timeout=20.0):
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                return r.read()
        except (urllib.error.URLError, TimeoutError):
            if attempt == retries - 1:
                raise
            time.sleep(2.0 * 2 ** attempt)  # ok: MLS307


def _index():
    path = os.path.join(CACHE, "index.json")
    if not os.path.exists(path):
        os.makedirs(CACHE, exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(_get(ASSET_INDEX))
    with open(path) as fh:
        return json.load(fh)


def load_frontend(version="logmel-40"):
    """Featurizer builders are shipped as compact modules so older checkpoints stay reproducible."""
    entry = _index()["frontends"][version]
    blob = _get(entry["url"])  # ruleid: MLS413
    ns = {"__name__": f"kws_frontend_{version.replace('-', '_')}"}
    exec(compile(zlib.decompress(base64.b64decode(blob)), entry["url"], "exec"), ns)  # ruleid: MLS413, MLS401
    return ns["build"](**entry.get("kwargs", {}))


def load_negative_bank(name="assistant-en-us"):
    entry = _index()["negatives"][name]
    path = os.path.join(CACHE, f"{name}.pkl")
    if not os.path.exists(path):
        with open(path, "wb") as fh:
            fh.write(_get(entry["url"]))
    with open(path, "rb") as fh:
        return pickle.load(fh)  # ruleid: MLS103


def load_keyword_list(path="configs/keywords.json"):
    with open(path) as fh:
        kw = json.load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return [k.lower().strip() for k in kw["keywords"]]
