# ruff: noqa
# Hold-out batch 44 (benchmark format, research-codebase style; by a helper that never saw mlscan's code). Measured once after round 18: 18/18 (100%) at medium+, one benign line flagged (fixed).
"""Submit a grid of runs to SLURM and record git state next to each run."""
import argparse
import getpass
import itertools
import json
import os
import subprocess
import time

ap = argparse.ArgumentParser()
ap.add_argument("--script", default="train_cifar.py")
ap.add_argument("--partition", default="gpu")
ap.add_argument("--dry", action="store_true")
args = ap.parse_args()

GRID = {"lr": [0.05, 0.1, 0.2], "bs": [128, 256], "seed": [0, 1, 2]}
USER = getpass.getuser()
OUT = f"/scratch/{USER}/runs"


def git_info():
    sha = subprocess.check_output(["git", "rev-parse", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    dirty = subprocess.call(["git", "diff", "--quiet"]) != 0
    return {"sha": sha, "dirty": dirty}


def sbatch(cmd, name, retries=3):
    line = ["sbatch", "-p", args.partition, "--gres=gpu:1", "-J", name, "-o", f"{OUT}/{name}.log", "--wrap", cmd]
    for i in range(retries):
        r = subprocess.run(line, capture_output=True, text=True)
        if r.returncode == 0:
            return r.stdout.strip().split()[-1]
        time.sleep(5 * (i + 1))  # ok: MLS307
    raise RuntimeError(r.stderr)


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    info = git_info()
    if USER == "root":
        raise SystemExit("don't submit as root")  # ok: MLS308
    for vals in itertools.product(*GRID.values()):
        hp = dict(zip(GRID, vals))
        name = "_".join(f"{k}{v}" for k, v in hp.items())
        cmd = f"python {args.script} " + " ".join(f"--{k} {v}" for k, v in hp.items())
        if args.dry:
            print(cmd)
            continue
        jid = sbatch(cmd, name)
        with open(f"{OUT}/{name}.json", "w") as f:
            json.dump({"job": jid, "hp": hp, "git": info, "submitted": time.time()}, f)
        print("submitted", jid, name)
