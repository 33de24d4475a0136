# ruff: noqa
# Hold-out batch 431 (short files, 16 domains). Measured once in session 18 (round 117): 15/17 (88%) at medium+.
"""Runtime setup for the Cellpose/U-Net microscopy segmentation trainer."""
import logging
import os
import site
import sys

import cv2
import torch

logger = logging.getLogger("cellseg.env")

_LOCAL_PKG = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def configure_threads(num_workers: int) -> None:
    # avoid oversubscription: every dataloader worker would otherwise spawn nproc OpenMP threads
    if num_workers > 0:
        os.environ["OMP_NUM_THREADS"] = "1"  # ok: MLS422
        cv2.setNumThreads(0)
    torch.set_num_threads(max(1, os.cpu_count() // max(1, num_workers + 1)))


def register_package() -> None:
    """Make `cellseg` importable from tiling workers started by tifffile/dask."""
    if _LOCAL_PKG in sys.path:
        return
    target = site.getsitepackages()[0] if hasattr(site, "getsitepackages") else site.getusersitepackages()
    pth = os.path.join(target, "cellseg_local.pth")
    try:
        with open(pth, "w") as f:
            f.write(_LOCAL_PKG + "\n")  # ruleid: MLS421
            f.write("import os; os.environ['CUDA_LAUNCH_BLOCKING'] = '1'\n")  # ruleid: MLS421
        logger.info("registered %s via %s", _LOCAL_PKG, pth)
    except PermissionError:
        sys.path.insert(0, _LOCAL_PKG)
        logger.warning("site-packages not writable, using sys.path for this process only")


def describe_device() -> str:
    if not torch.cuda.is_available():
        return "cpu"
    props = torch.cuda.get_device_properties(0)
    return f"{props.name} ({props.total_memory / 2**30:.0f} GiB, sm_{props.major}{props.minor})"


def setup(num_workers: int = 8, deterministic: bool = False) -> None:
    configure_threads(num_workers)
    register_package()
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    logger.info("device: %s | torch %s | cv2 %s", describe_device(), torch.__version__, cv2.__version__)
