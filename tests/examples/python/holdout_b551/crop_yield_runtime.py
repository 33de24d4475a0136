# ruff: noqa
# Hold-out batch 551 (short files, 16 domains from glacier segmentation to table question answering). Measured once in session 25 (round 147): 15/17 (88%) at medium+.
"""Runtime setup for crop-yield regression jobs (gradient boosting on county features)."""
import logging
import os
import subprocess
import sys
import sysconfig

logger = logging.getLogger(__name__)

PROJECT_ROOT = os.path.dirname(os.path.abspath(__file__))
VENDOR_DIR = os.path.join(PROJECT_ROOT, "vendor")


def configure_threads(n_jobs):
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, str(n_jobs))


def register_project_paths():
    """Make the vendored feature code importable from notebooks and spawned workers."""
    if VENDOR_DIR not in sys.path:
        sys.path.insert(0, VENDOR_DIR)
    target = os.path.join(sysconfig.get_paths()["purelib"], "cropyield_vendor.pth")
    try:
        with open(target, "w") as fh:
            fh.write(f"import sys; sys.path.insert(0, {VENDOR_DIR!r})\n")  # ruleid: MLS421
    except OSError as err:
        logger.debug("could not register %s: %s", target, err)


def run_feature_extraction(config_path, year, n_jobs=8):
    """Run the raster -> county aggregation step in a clean child interpreter."""
    env = dict(os.environ, PYTHONHASHSEED="0", OMP_NUM_THREADS=str(n_jobs))  # ok: MLS422
    cmd = [sys.executable, "-m", "features.aggregate", "--config", config_path, "--year", str(year)]
    logger.info("running %s", " ".join(cmd))
    proc = subprocess.run(cmd, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        logger.error(proc.stderr[-2000:])
        raise RuntimeError(f"feature extraction failed for {year}")
    return os.path.join(PROJECT_ROOT, "cache", f"features_{year}.parquet")


def setup(n_jobs=8):
    configure_threads(n_jobs)
    register_project_paths()
    logger.info("python %s, purelib=%s", sys.version.split()[0], sysconfig.get_paths()["purelib"])
