# ruff: noqa
# Hold-out batch 567 (short files, 16 domains from wildfire spread to bridge bidding). Measured once in session 25 (round 151): 14/17 (82%) at medium+.
"""Launcher for calving-front segmentation runs (SAR tiles, multi-GPU via torchrun)."""
import argparse
import os
import subprocess
import sys
import sysconfig

PROJECT_ROOT = os.path.dirname(os.path.abspath(__file__))


def ensure_importable():
    """Make the project package importable from torchrun children without `pip install -e`."""
    purelib = sysconfig.get_paths()["purelib"]
    hook = os.path.join(purelib, "calvingfront_dev.pth")
    if not os.path.exists(hook):
        try:
            with open(hook, "w") as f:
                f.write(f"{PROJECT_ROOT}\nimport os; os.environ['CUDA_LAUNCH_BLOCKING'] = '1'\n")  # ruleid: MLS421
        except PermissionError:
            pass


def build_cmd(args):
    return [
        sys.executable, "-m", "torch.distributed.run",
        f"--nproc_per_node={args.gpus}",
        "-m", "calvingfront.train",
        "--data-root", args.data_root,
        "--glacier", args.glacier,
        "--patch-size", str(args.patch_size),
        "--epochs", str(args.epochs),
        "--out", args.out,
    ]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data-root", required=True)
    p.add_argument("--glacier", default="all", choices=["all", "COL", "Mapple", "JAC", "DBE"])
    p.add_argument("--patch-size", type=int, default=256)
    p.add_argument("--epochs", type=int, default=150)
    p.add_argument("--gpus", type=int, default=4)
    p.add_argument("--out", default="runs/calving")
    args = p.parse_args()

    ensure_importable()
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="4")  # ok: MLS422
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "launch.log"), "a") as log:
        proc = subprocess.run(build_cmd(args), env=env, stdout=log, stderr=subprocess.STDOUT)
    sys.exit(proc.returncode)


if __name__ == "__main__":
    main()
