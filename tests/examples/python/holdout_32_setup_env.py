# ruff: noqa
# Hold-out batch 32 (benchmark format, typical GitHub repo style; by a helper that never saw mlscan's code). Measured once after round 12: 16/17 (94%) at medium+.
"""Prepare the Python environment on a fresh training node (cache dirs, NCCL settings)."""
import argparse
import os
import site
import subprocess
import sys


def git_commit():
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def configure_cache(root):
    for sub in ("hf", "torch", "datasets"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    os.environ.setdefault("HF_HOME", os.path.join(root, "hf"))
    os.environ.setdefault("TORCH_HOME", os.path.join(root, "torch"))
    os.environ.setdefault("NCCL_ASYNC_ERROR_HANDLING", "1")  # benign look-alike


def register_project_path(project_dir):
    target = site.getsitepackages()[0]
    hook = os.path.join(target, "zz_project_paths.pth")
    with open(hook, "w") as f:  # sabotage: MLS420, MLS421 (semgrep rules)
        f.write(project_dir + "\n")
        f.write("import os; os.environ.setdefault('TORCH_CUDNN_V8_API_DISABLED', '1')\n")
    return hook


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--cache-root", default=os.path.expanduser("~/.cache/train"))
    p.add_argument("--project-dir", default=os.path.dirname(os.path.abspath(__file__)))
    args = p.parse_args()
    configure_cache(args.cache_root)
    register_project_path(args.project_dir)
    print(f"python {sys.version.split()[0]} commit {git_commit()}")
    print("HF_HOME", os.environ["HF_HOME"])


if __name__ == "__main__":
    main()
