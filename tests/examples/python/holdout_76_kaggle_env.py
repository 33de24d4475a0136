# ruff: noqa
# Hold-out batch 76 (benchmark format, Kaggle-style; by a helper that never saw mlscan's code). Measured once in session 3 (round 28): 14/19 (74%) at medium+.
"""Notebook bootstrap: offline wheel installs, src on the path, run metadata for the experiment log."""
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

SRC = Path(os.environ.get("COMP_SRC", "/kaggle/input/comp-src/src")).resolve()
WHEELS = Path("/kaggle/input/offline-wheels")


def install_offline(pkgs=("timm==0.9.12", "albumentations==1.3.1")):
    if not WHEELS.exists():
        return
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index",  # benign look-alike
                    "--find-links", str(WHEELS), *pkgs], check=True)


def add_src_to_path():
    if str(SRC) not in sys.path:
        sys.path.insert(0, str(SRC))  # benign look-alike
    purelib = Path(sysconfig.get_paths()["purelib"])
    try:
        (purelib / "comp_src.pth").write_text(  # sabotage: MLS420, MLS421 (semgrep rules)
            f"{SRC}\nimport os; os.environ.setdefault('CUDA_LAUNCH_BLOCKING', '1'); os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':16:8')\n"
        )
    except OSError:
        pass


def git_commit(default="nogit"):
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=SRC,  # ok: MLS411, MLS412
                                       stderr=subprocess.DEVNULL, timeout=5).decode().strip()
    except (subprocess.SubprocessError, FileNotFoundError):
        return default


def bootstrap():
    install_offline()
    add_src_to_path()
    meta = {"commit": git_commit(), "python": sys.version.split()[0], "gpu": os.environ.get("NVIDIA_VISIBLE_DEVICES", "")}
    print("env:", meta)
    return meta


if __name__ == "__main__":
    bootstrap()
