# ruff: noqa
# Hold-out batch 407 (16 short files, one domain each). Measured once in session 16 (round 111): 14/17 (82%) at medium+.
"""Launch helpers for ISIC skin-lesion classification sweeps."""
import logging
import os
import subprocess
import sys
import sysconfig

log = logging.getLogger("isic.launch")

REPO_ROOT = os.path.dirname(os.path.abspath(__file__))
VENDOR_DIR = os.path.join(REPO_ROOT, "third_party")


def register_vendor_packages():
    """Make the vendored timm/albumentations forks importable from worker processes."""
    purelib = sysconfig.get_paths()["purelib"]
    hook = os.path.join(purelib, "00-isic-vendor.pth")
    line = f"import sys; sys.path.insert(0, {VENDOR_DIR!r})\n"
    try:
        with open(hook, "w") as fh:
            fh.write(line)  # ruleid: MLS421
    except PermissionError:
        log.warning("cannot write %s; falling back to PYTHONPATH", hook)
        sys.path.insert(0, VENDOR_DIR)


def launch_fold_eval(ckpt, fold, gpu, out_dir):
    env = dict(os.environ)
    env["CUDA_VISIBLE_DEVICES"] = str(gpu)  # ok: MLS422
    env["OMP_NUM_THREADS"] = "4"
    cmd = [sys.executable, "-m", "isic.evaluate", "--ckpt", ckpt,
           "--fold", str(fold), "--tta", "8", "--out", out_dir]
    log.info("fold %d eval on gpu %d: %s", fold, gpu, " ".join(cmd))
    return subprocess.Popen(cmd, env=env, cwd=REPO_ROOT)


def run_all_folds(ckpts, gpus, out_dir):
    register_vendor_packages()
    procs = []
    for fold, ckpt in enumerate(ckpts):
        procs.append(launch_fold_eval(ckpt, fold, gpus[fold % len(gpus)], out_dir))
    failed = [i for i, p in enumerate(procs) if p.wait() != 0]
    if failed:
        raise RuntimeError(f"fold eval failed for folds {failed}")
