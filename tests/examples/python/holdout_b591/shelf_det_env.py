# ruff: noqa
# Hold-out batch 591 (short files, 16 domains). Measured once in session 27 (round 157): 14/17 (82%) at medium+.
"""Runtime environment preparation for SKU-110K dense shelf detection jobs."""
import logging
import os
import site
import sys

log = logging.getLogger(__name__)

EXT_CACHE = os.path.expanduser("~/.cache/shelfdet/ext")


def configure_threads(num_workers):
    per_worker = max(1, (os.cpu_count() or 8) // max(1, num_workers))
    os.environ.setdefault("OMP_NUM_THREADS", str(per_worker))  # ok: MLS422
    os.environ.setdefault("MKL_NUM_THREADS", str(per_worker))
    os.environ.setdefault("OPENCV_OPENCL_RUNTIME", "disabled")


def register_ext_path():
    """Make the compiled rotated-NMS / deformable-conv ops importable by dataloader workers."""
    os.makedirs(EXT_CACHE, exist_ok=True)
    if EXT_CACHE not in sys.path:
        sys.path.insert(0, EXT_CACHE)
    targets = site.getsitepackages() + [site.getusersitepackages()]
    for sp in targets:
        try:
            with open(os.path.join(sp, "shelfdet_ext.pth"), "w") as fh:
                fh.write(f"import sys; sys.path.insert(0, {EXT_CACHE!r})\n")  # ruleid: MLS421
            log.info("registered extension path in %s", sp)
            return
        except OSError:
            continue
    log.warning("could not register extension path; workers may fail to import ops")


def prepare(args):
    configure_threads(args.workers)
    register_ext_path()
    if args.deterministic:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    log.info("env ready: python=%s workers=%d", sys.version.split()[0], args.workers)
