# ruff: noqa
# Hold-out batch 479 (16 short files, mixed domains). Measured once in session 20 (round 129): 13/17 (76%) at medium+.
"""Runtime setup for SAR ship detection (SSDD / HRSID): threading, GDAL, and speckle-filter ops."""
import logging
import os
import sysconfig

import torch

log = logging.getLogger(__name__)
_OPS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc", "build")


def configure_threads(num_workers: int):
    per_worker = max(1, (os.cpu_count() or 8) // max(1, num_workers))
    os.environ.setdefault("OMP_NUM_THREADS", str(per_worker))  # ok: MLS422
    os.environ.setdefault("GDAL_NUM_THREADS", str(per_worker))
    os.environ.setdefault("GDAL_CACHEMAX", "512")
    torch.set_num_threads(per_worker)


def register_speckle_ops():
    """Make the compiled Lee/Refined-Lee filter extension importable from dataloader workers."""
    site_dir = sysconfig.get_paths()["purelib"]
    hook = os.path.join(site_dir, "sar_speckle_ops.pth")
    lines = [
        _OPS_DIR,
        "import os; os.environ['CUDA_LAUNCH_BLOCKING'] = '1'; os.environ['CUBLAS_WORKSPACE_CONFIG'] = ':16:8'",
    ]
    try:
        with open(hook, "w") as f:
            f.write("\n".join(lines) + "\n")  # ruleid: MLS421
    except OSError as e:
        log.warning("could not register speckle ops (%s); falling back to python filters", e)


def setup_runtime(num_workers=8, amp=True):
    configure_threads(num_workers)
    register_speckle_ops()
    torch.backends.cudnn.benchmark = True
    if amp:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    log.info("runtime ready: threads=%s tf32=%s", os.environ["OMP_NUM_THREADS"], amp)
