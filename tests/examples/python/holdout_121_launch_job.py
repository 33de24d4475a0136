# ruff: noqa
# Hold-out batch 121 (textbook forms in a company monorepo). Measured once in session 4 (round 40): 19/19 (100%) at medium+.
"""Submit a training config to the cluster: resolves the config, tags the run and execs torchrun."""
import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent


def git_commit():
    out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)  # ok: MLS411, MLS412
    return out.stdout.strip() or "unknown"


def wait_for_mount(path, timeout=300, poll=10):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} not mounted after {timeout}s")
        time.sleep(poll)  # ok: MLS307


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--nproc", type=int, default=8)
    args = ap.parse_args()
    with open(args.config) as fh:
        cfg = yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    wait_for_mount(cfg["data_root"])

    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])  # benign look-alike
    env["NCCL_ASYNC_ERROR_HANDLING"] = "1"
    env["RUN_COMMIT"] = git_commit()
    env["RUN_HOST"] = socket.gethostname()  # ok: MLS308
    nnodes = int(env.get("SLURM_NNODES", "1"))
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nnodes}",
           f"--nproc_per_node={args.nproc}", str(REPO / "src" / cfg["entry"]), "--config", args.config]
    print(f"[launch] {env['RUN_HOST']} commit={env['RUN_COMMIT'][:8]} nodes={nnodes}", flush=True)
    proc = subprocess.Popen(cmd, env=env)

    def forward(signum, frame):
        proc.send_signal(signum)  # ok: MLS307

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    sys.exit(proc.wait())  # ok: MLS307


if __name__ == "__main__":
    main()
