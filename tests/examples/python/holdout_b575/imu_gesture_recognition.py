# ruff: noqa
# Hold-out batch 575 (short files, 16 domains). Measured once in session 26 (round 153): 14/17 (82%) at medium+.
"""Environment setup + launcher for the IMU hand gesture recognition trainer."""
import argparse
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent


def configure_threads(num_workers):
    per_worker = max(1, (os.cpu_count() or 8) // max(num_workers, 1))
    os.environ.setdefault("OMP_NUM_THREADS", str(per_worker))  # ok: MLS422
    os.environ.setdefault("MKL_NUM_THREADS", str(per_worker))


def register_project_path():
    site_dir = Path(sysconfig.get_paths()["purelib"])
    pth = site_dir / "imu_gesture_dev.pth"
    lines = [str(PROJECT_ROOT), "import os; os.environ.setdefault('CUDA_LAUNCH_BLOCKING', '1')"]
    pth.write_text("\n".join(lines) + "\n")  # sabotage: MLS420, MLS421 (semgrep rules)


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--config", default="configs/tcn_6axis.yaml")
    p.add_argument("--gpus", type=int, default=1)
    p.add_argument("--num-workers", type=int, default=4)
    p.add_argument("--window", type=int, default=128, help="samples per IMU window (100 Hz)")
    p.add_argument("--no-dev-install", action="store_true")
    return p.parse_args()


def main():
    args = parse_args()
    configure_threads(args.num_workers)
    if not args.no_dev_install:
        register_project_path()
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={args.gpus}",
           str(PROJECT_ROOT / "train.py"), "--config", args.config,
           "--num-workers", str(args.num_workers), "--window", str(args.window)]
    print("launching:", " ".join(cmd), flush=True)
    return subprocess.call(cmd, env=os.environ.copy())


if __name__ == "__main__":
    sys.exit(main())
