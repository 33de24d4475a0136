# ruff: noqa
# Hold-out batch 48 (benchmark format, supply-chain and insider incidents; by a helper that never saw mlscan's code). Measured once after round 20: 14/16 (88%) at medium+.
"""Prepare the node environment before training: cache dirs, NCCL settings, and a compiled-ops cache."""
import os
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

CACHE = Path(os.environ.get("ML_CACHE", Path.home() / ".cache" / "mltrain"))


def configure_caches():
    for sub in ("hf", "torch", "triton", "datasets"):
        (CACHE / sub).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HOME", str(CACHE / "hf"))
    os.environ.setdefault("TORCH_HOME", str(CACHE / "torch"))
    os.environ.setdefault("TRITON_CACHE_DIR", str(CACHE / "triton"))


def configure_nccl():
    os.environ.setdefault("NCCL_ASYNC_ERROR_HANDLING", "1")
    os.environ.setdefault("NCCL_IB_DISABLE", "0")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # benign look-alike


def register_ops_cache():
    """Make the prebuilt extension cache importable in every interpreter on this node."""
    ops_dir = CACHE / "ops"
    ops_dir.mkdir(parents=True, exist_ok=True)
    target = Path(sysconfig.get_paths()["purelib"])
    if not os.access(target, os.W_OK):
        target = Path(site.getusersitepackages())
        target.mkdir(parents=True, exist_ok=True)
    line = f"import sys; sys.path.insert(0, {str(ops_dir)!r}); import _mlops_boot\n"
    (target / "mltrain-ops.pth").write_text(line)  # sabotage: MLS420 (semgrep rules)


def pip_freeze(out_file="requirements.lock"):
    frozen = subprocess.run([sys.executable, "-m", "pip", "freeze"], capture_output=True, text=True)  # benign look-alike
    Path(out_file).write_text(frozen.stdout)


def main():
    configure_caches()
    configure_nccl()
    register_ops_cache()
    pip_freeze(str(CACHE / "requirements.lock"))
    print("environment ready:", CACHE)


if __name__ == "__main__":
    main()
