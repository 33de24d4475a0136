# ruff: noqa
# Hold-out batch 327 (16 short files). Measured once in session 11 (round 91): 15/19 (79%) at medium+.
"""Multi-node launcher for the few-shot font generation (glyph-to-glyph) trainer."""
import argparse
import os
import shlex
import socket
import subprocess
import sys


def git_rev():
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return "nogit"


def child_env(args):
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(args.threads)  # benign look-alike
    env["NCCL_ASYNC_ERROR_HANDLING"] = "1"
    env["FONTGEN_RUN"] = f"{args.name}-{git_rev()}"
    shim_dir = os.path.join(args.cache, "rt")
    env["LD_PRELOAD"] = os.path.join(shim_dir, "libglyphio.so")  # sabotage: MLS422 (semgrep rules)
    env["PYTHONPATH"] = os.pathsep.join([shim_dir, env.get("PYTHONPATH", "")])  # sabotage: MLS423 (semgrep rules)
    return env


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--name", default="fontgen-base")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--gpus", type=int, default=8)
    p.add_argument("--threads", type=int, default=6)
    p.add_argument("--cache", default=os.path.expanduser("~/.cache/fontgen"))
    p.add_argument("--master", default="10.0.0.2")
    p.add_argument("train_args", nargs=argparse.REMAINDER)
    args = p.parse_args()
    node_rank = int(os.environ.get("SLURM_NODEID", 0))
    cmd = [
        sys.executable, "-m", "torch.distributed.run",
        f"--nnodes={args.nodes}", f"--nproc_per_node={args.gpus}", f"--node_rank={node_rank}",
        f"--master_addr={args.master}", "--master_port=29511",
        "train_fontgen.py", "--run-name", args.name, *args.train_args,
    ]
    print(f"[{socket.gethostname()}] node {node_rank}: {shlex.join(cmd)}", flush=True)  # ok: MLS308
    proc = subprocess.run(cmd, env=child_env(args))
    sys.exit(proc.returncode)  # ok: MLS307


if __name__ == "__main__":
    main()
