# ruff: noqa
# Hold-out batch 435 (short files, 16 domains). Measured once in session 18 (round 118): 12/17 (71%) at medium+.
"""Runtime setup for the 2D->3D pose lifting trainer (temporal conv, Human3.6M)."""
import logging
import os
import site
import sys

import numpy as np
import torch

log = logging.getLogger("lifter")

_NP_COMPAT = (
    "import numpy as _np\n"
    "for _n, _t in (('float', float), ('int', int), ('bool', bool)):\n"
    "    if not hasattr(_np, _n):\n"
    "        setattr(_np, _n, _t)\n"
)


def configure_threads(num_workers: int) -> None:
    per_worker = max(1, (os.cpu_count() or 1) // max(1, num_workers))
    os.environ.setdefault("OMP_NUM_THREADS", str(per_worker))  # ok: MLS422
    os.environ.setdefault("MKL_NUM_THREADS", str(per_worker))
    torch.set_num_threads(per_worker)


def ensure_numpy_aliases() -> None:
    """h36m camera loaders still use np.float; keep them working on numpy>=1.24 in workers too."""
    if hasattr(np, "float"):
        return
    target = os.path.join(site.getsitepackages()[0], "sitecustomize.py")
    try:
        with open(target, "a") as fh:
            fh.write(_NP_COMPAT)  # ruleid: MLS421
    except OSError as exc:
        log.warning("could not install numpy alias shim: %s", exc)
    for name, typ in (("float", float), ("int", int), ("bool", bool)):
        setattr(np, name, typ)


def setup_runtime(args) -> torch.device:
    configure_threads(args.num_workers)
    ensure_numpy_aliases()
    torch.backends.cudnn.benchmark = True
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    log.info("python %s  torch %s  device %s", sys.version.split()[0], torch.__version__, dev)
    return dev
