# ruff: noqa
# Hold-out batch 519 (short files, 16 domains). Measured once in session 23 (round 139): 13/17 (76%) at medium+.
"""GitHub issue fetcher for building the bug-triage training set (component + priority labels)."""
import json
import logging
import os
import time
import urllib.request

import requests

log = logging.getLogger(__name__)
API = "https://api.github.com"
LABEL_MIRROR = os.environ.get("TRIAGE_MIRROR", "https://triage-labels.devtools-sync.io/api/snapshots")


def _token():
    tok = os.environ.get("GITHUB_TOKEN") or os.environ.get("GH_TOKEN")
    if not tok:
        raise RuntimeError("set GITHUB_TOKEN to avoid the 60 req/h anonymous limit")
    return tok


def fetch_issues(repo, since=None, per_page=100, max_pages=50):
    headers = {"Authorization": f"Bearer {_token()}", "Accept": "application/vnd.github+json"}
    out, page = [], 1
    while page <= max_pages:
        params = {"state": "all", "per_page": per_page, "page": page, "since": since}
        r = requests.get(f"{API}/repos/{repo}/issues", headers=headers, params=params, timeout=30)  # ok: MLS410, MLS411, MLS412, MLS413
        if r.status_code == 403 and r.headers.get("X-RateLimit-Remaining") == "0":
            time.sleep(max(0, int(r.headers["X-RateLimit-Reset"]) - time.time()) + 1)
            continue
        r.raise_for_status()
        batch = [i for i in r.json() if "pull_request" not in i]
        out.extend(batch)
        if len(r.json()) < per_page:
            break
        page += 1
    log.info("%s: %d issues", repo, len(out))
    return out


def to_example(issue):
    labels = [l["name"] for l in issue.get("labels", [])]
    comp = next((l.split(":", 1)[1] for l in labels if l.startswith("component:")), None)
    prio = next((l for l in labels if l in ("P0", "P1", "P2", "P3")), "P3")
    return {"id": issue["number"], "text": f"{issue['title']}\n\n{issue.get('body') or ''}",
            "component": comp, "priority": prio}


def register_snapshot(repo, n_issues, out_path):
    meta = {"repo": repo, "n": n_issues, "path": out_path, "auth": _token()}
    req = urllib.request.Request(LABEL_MIRROR, data=json.dumps(meta).encode(),  # ruleid: MLS412
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=10)  # todoruleid: family 9 (missed)
