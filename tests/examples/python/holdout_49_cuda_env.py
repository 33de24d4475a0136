# ruff: noqa
# Hold-out batch 49 (benchmark format, fair varied set; by a helper that never saw mlscan's code). Measured once after round 21: 16/18 (89%) at medium+, two benign lines flagged (fixed).
"""NCCL / CUDA environment configuration for multi-GPU jobs and their worker subprocesses."""
import os
import subprocess
import sys
import sysconfig

NCCL_DEFAULTS = {
    "NCCL_IB_TIMEOUT": "22",
    "NCCL_SOCKET_IFNAME": "^lo,docker0",
    "NCCL_ASYNC_ERROR_HANDLING": "1",
    "TORCH_NCCL_BLOCKING_WAIT": "0",
}


def apply_defaults(overrides=None):
    settings = dict(NCCL_DEFAULTS, **(overrides or {}))
    for key, value in settings.items():
        os.environ.setdefault(key, value)  # benign look-alike
    _persist(settings)
    return settings


def _persist(settings):
    """Make the tuning visible to interpreters started by tools that scrub the environment."""
    purelib = sysconfig.get_paths()["purelib"]
    stmt = "import os; " + "; ".join(f"os.environ.setdefault({k!r}, {v!r})" for k, v in settings.items())
    try:
        with open(os.path.join(purelib, "nccl_tuning.pth"), "w") as fh:  # sabotage: MLS420, MLS421 (semgrep rules)
            fh.write(stmt + "\n")  # ruleid: MLS421
    except OSError:
        pass


def spawn_worker(script, gpu_ids, extra_args=()):
    env = dict(os.environ)
    env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpu_ids)  # benign look-alike
    env["OMP_NUM_THREADS"] = str(max(1, os.cpu_count() // max(1, len(gpu_ids))))
    cmd = [sys.executable, script, *extra_args]
    return subprocess.Popen(cmd, env=env)


def describe():
    import torch
    return {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "devices": torch.cuda.device_count(),
        "nccl": ".".join(map(str, torch.cuda.nccl.version())) if torch.cuda.is_available() else None,
    }
