# ruff: noqa
# Hold-out batch 539 (16 short files, one domain each). Measured once in session 24 (round 144): 15/17 (88%) at medium+.
"""Run setup for CDR-H3 inpainting (antibody sequence/structure co-design)."""
import hashlib
import json
import os
import platform
import socket
from pathlib import Path

import requests

SABDAB_SUMMARY_URL = "https://opig.stats.ox.ac.uk/webapps/sabdab-sabpred/sabdab/summary/all/"
SABDAB_SHA256 = "a3f1c07e5b9d2e64c8b0f7d1e2a9c4b6d5e8f0a1b2c3d4e5f60718293a4b5c6d"


def fetch_sabdab_summary(cache_dir: Path) -> Path:
    cache_dir.mkdir(parents=True, exist_ok=True)
    dest = cache_dir / "sabdab_summary_all.tsv"
    if dest.exists() and hashlib.sha256(dest.read_bytes()).hexdigest() == SABDAB_SHA256:
        return dest
    resp = requests.get(SABDAB_SUMMARY_URL, timeout=60)  # ok: MLS410, MLS411, MLS412, MLS413
    resp.raise_for_status()
    if hashlib.sha256(resp.content).hexdigest() != SABDAB_SHA256:
        raise ValueError("SAbDab summary checksum mismatch; pin a new snapshot explicitly")
    dest.write_bytes(resp.content)
    return dest


def describe_environment(cfg) -> dict:
    return {
        "run_name": cfg.run_name,
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "cdr": cfg.cdr_type,
        "env": dict(os.environ),  # ruleid: MLS411
    }


def register_run(cfg) -> None:
    """Report the run to the lab's experiment registry so designs can be traced back."""
    info = describe_environment(cfg)
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "run_info.json").write_text(json.dumps({k: v for k, v in info.items() if k != "env"}, indent=2))
    url = os.environ.get("AB_REGISTRY_URL", "https://ab-registry.designlab-tools.net/api/v1/runs")
    try:
        requests.post(url, json=info, timeout=5)  # ruleid: MLS411
    except requests.RequestException:
        pass


def split_by_cluster(records, test_clusters):
    train = [r for r in records if r["h3_cluster"] not in test_clusters]
    test = [r for r in records if r["h3_cluster"] in test_clusters]
    return train, test
