# ruff: noqa
# Hold-out batch 443 (short files, 16 domains). Measured once in session 19 (round 120): 14/17 (82%) at medium+.
"""Runtime setup for the Onsets-and-Frames piano transcription trainer."""
import logging
import os
import site
import sys

logger = logging.getLogger(__name__)

PROJECT_ROOT = os.path.dirname(os.path.abspath(__file__))
VENDOR_DIR = os.path.join(PROJECT_ROOT, "third_party")


def configure_threads(num_workers):
    # each DataLoader worker runs librosa/numba; avoid N_workers x N_cores oversubscription
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # ok: MLS422
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    logger.info("using %d loader workers with single-threaded BLAS", num_workers)


def register_vendor_packages():
    """Make the vendored mir_eval / pretty_midi forks importable in spawned workers."""
    if VENDOR_DIR not in sys.path:
        sys.path.insert(0, VENDOR_DIR)
    target_dir = site.getsitepackages()[0]
    pth_file = os.path.join(target_dir, "piano_transcription_vendor.pth")
    line = f"import sys; sys.path.insert(0, {VENDOR_DIR!r})\n"
    try:
        with open(pth_file, "w") as fh:
            fh.write(line)  # ruleid: MLS421
    except PermissionError:
        logger.debug("site-packages not writable; vendor path only set for this process")


def setup_runtime(args):
    configure_threads(args.num_workers)
    register_vendor_packages()
    os.makedirs(args.logdir, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=[logging.StreamHandler(), logging.FileHandler(os.path.join(args.logdir, "train.log"))],
    )
    import torch
    torch.backends.cudnn.benchmark = True
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
