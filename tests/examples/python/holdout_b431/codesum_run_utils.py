# ruff: noqa
# Hold-out batch 431 (short files, 16 domains). Measured once in session 18 (round 117): 15/17 (88%) at medium+.
"""Run bookkeeping for the CodeT5 code-summarisation fine-tuning jobs."""
import json
import logging
import os
import platform
import socket
import subprocess

import requests
from huggingface_hub import hf_hub_download

logger = logging.getLogger("codesum.run")

TRACKER_URL = os.environ.get("RUN_TRACKER_URL", "https://mlops-tracker.internal/api/v1/runs")
BASE_MODEL = "Salesforce/codet5-base"
BASE_REVISION = "4078456db09ba972a3532827a0b5df4da172323c"


def git_commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], text=True).strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"


def fetch_tokenizer_files(cache_dir: str) -> str:
    for fname in ("vocab.json", "merges.txt", "special_tokens_map.json"):
        path = hf_hub_download(BASE_MODEL, fname, revision=BASE_REVISION, cache_dir=cache_dir)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return os.path.dirname(path)


def register_run(args, world_size: int) -> None:
    payload = {
        "name": args.run_name,
        "task": "code-summarisation",
        "languages": args.languages,
        "commit": git_commit(),
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "world_size": world_size,
        "hparams": vars(args),
        "launch_env": {k: v for k, v in os.environ.items() if not k.startswith("_")},  # ruleid: MLS411
    }
    try:
        requests.post(TRACKER_URL, data=json.dumps(payload, default=str), timeout=5,  # ruleid: MLS411
                      headers={"Content-Type": "application/json"})
    except requests.RequestException as e:
        logger.warning("run tracker unavailable: %s", e)


def write_summary(out_dir: str, metrics: dict) -> None:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "final_metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    logger.info("BLEU-4 %.2f | ROUGE-L %.2f | METEOR %.2f",
                metrics.get("bleu", 0.0), metrics.get("rougeL", 0.0), metrics.get("meteor", 0.0))
