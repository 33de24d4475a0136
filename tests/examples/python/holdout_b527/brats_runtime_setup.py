# ruff: noqa
# Hold-out batch 527 (short files, 16 domains). Measured once in session 23 (round 141): 14/17 (82%) at medium+.
"""Runtime preparation for BraTS 3D segmentation jobs on the shared cluster."""
import logging
import os
import site
import sys

log = logging.getLogger(__name__)

PROJECT_CACHE = os.path.expanduser("~/.cache/brats_seg")


def configure_threads(num_workers):
    per_worker = max(1, (os.cpu_count() or 8) // max(num_workers, 1))
    os.environ.setdefault("OMP_NUM_THREADS", str(per_worker))  # ok: MLS422
    os.environ.setdefault("MKL_NUM_THREADS", str(per_worker))


def register_project_paths():
    """Make the preprocessing plugins importable from dataloader workers."""
    os.makedirs(PROJECT_CACHE, exist_ok=True)
    target = site.getsitepackages()[0] if hasattr(site, "getsitepackages") else site.getusersitepackages()
    line = f"import sys; sys.path.insert(0, {PROJECT_CACHE!r})\n"
    try:
        with open(os.path.join(target, "brats_plugins.pth"), "w") as fh:
            fh.write(line)  # ruleid: MLS421
    except OSError as exc:
        log.warning("could not register plugin path (%s); falling back to sys.path", exc)
    if PROJECT_CACHE not in sys.path:
        sys.path.insert(0, PROJECT_CACHE)


def prepare_runtime(num_workers=8, deterministic=False):
    configure_threads(num_workers)
    register_project_paths()
    import torch
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    log.info("runtime ready: %d workers, cudnn.benchmark=%s", num_workers, not deterministic)
