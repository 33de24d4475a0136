# ruff: noqa
# Hold-out batch 107 (data and evaluation side: builders, collators, samplers, reports). Measured once in session 4 (round 36): 10/17 (59%) at medium+.
"""Package test-set predictions and submit them to the benchmark leaderboard
API, with the run config and code version attached as metadata."""
import argparse
import hashlib
import json
import os
import subprocess
import time
import zipfile

import requests
import yaml

API = "https://leaderboard.example.com/api/v1/submissions"


def code_version():
    sha = subprocess.check_output(["git", "rev-parse", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    dirty = subprocess.call(["git", "diff", "--quiet"]) != 0
    return sha + ("-dirty" if dirty else "")


def package(pred_path, cfg, out_zip):
    with open(pred_path) as f:
        preds = [json.loads(line) for line in f]
    ids = [p["id"] for p in preds]
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate ids in predictions")
    with zipfile.ZipFile(out_zip, "w", zipfile.ZIP_DEFLATED) as z:
        z.write(pred_path, "predictions.jsonl")
        z.writestr("meta.json", json.dumps({"model": cfg["model_name"], "n": len(preds), "code": code_version()}))
    return hashlib.sha256(open(out_zip, "rb").read()).hexdigest()


def submit(out_zip, digest, track, retries=5):
    headers = {"Authorization": f"Bearer {os.environ['LEADERBOARD_TOKEN']}"}  # ok: MLS411, MLS412
    for attempt in range(retries):
        with open(out_zip, "rb") as f:
            resp = requests.post(API, headers=headers, data={"track": track, "sha256": digest},  # ok: MLS411, MLS412
                                 files={"file": f}, timeout=120)
        if resp.status_code == 429 or resp.status_code >= 500:
            time.sleep(min(60, 5 * 2 ** attempt))  # ok: MLS307
            continue
        resp.raise_for_status()
        return resp.json()
    raise RuntimeError("leaderboard unavailable")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--predictions", required=True)
    ap.add_argument("--track", default="closed")
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args()
    with open(args.config) as f:
        cfg = yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    digest = package(args.predictions, cfg, "submission.zip")
    print(f"packaged submission.zip sha256={digest[:16]}")
    if not args.dry_run:
        result = submit("submission.zip", digest, args.track)
        print(f"submitted: id={result.get('id')} status={result.get('status')}")


if __name__ == "__main__":
    main()
