"""Shapes added in session 16: bad cases (`ruleid`) and the look-alikes that stay quiet (`ok`)."""
import functools
import operator
import os
import shutil
import stat
import sysconfig
from pathlib import Path

import numpy as np
import torch

_SHARED = stat.S_IRWXU | stat.S_IRWXG | stat.S_IRWXO
_open_up = functools.partial(os.chmod, mode=int("7" * 3, 8))
_relax = operator.methodcaller("chmod", 0o666)


# -- MLS424: world-writable modes, through partials, methodcaller, map and getattr -----------
def share_kernel_cache():
    kernels = Path(torch.__file__).resolve().parent / "_inductor"
    list(map(_open_up, kernels.rglob("*.py")))  # ruleid: MLS424


def share_site(cfg):
    site = Path(sysconfig.get_paths()["purelib"])
    for sub in cfg["shared"]:
        _relax(site / sub)  # ruleid: MLS424


def share_outputs(roots):
    for root in roots:
        [os.chmod(p, 0o777) for p in Path(root).rglob("*")]  # ruleid: MLS424


def share_logs(log_dir):
    set_mode = getattr(os, "ch" + "mod")
    for dirpath, _, files in os.walk(log_dir):
        list(map(lambda f: set_mode(os.path.join(dirpath, f), _SHARED), files))  # ruleid: MLS424


def share_with_group(run_dir):
    os.chmod(run_dir, 0o775)  # ok: MLS424
    for p in Path(run_dir).rglob("*.pt"):
        p.chmod(p.stat().st_mode | stat.S_IRGRP | stat.S_IROTH)  # ok: MLS424


def serve_metrics(sock_path):
    os.chmod(sock_path, 0o666)  # ok: MLS424


def _on_rm_error(func, path, exc):
    os.chmod(path, 0o777)  # ok: MLS424
    func(path)


def clean(tmp_dir):
    shutil.rmtree(tmp_dir, onerror=_on_rm_error)


# -- MLS306: a calibration *error* measured on the test split is a measurement, not a fit ----
def expected_calibration_error(labels, probs, bins=15):
    edges = np.linspace(0, 1, bins + 1)
    conf = probs.max(1)
    return float(sum(abs((labels[(conf > lo) & (conf <= hi)] == 1).mean() - conf[
        (conf > lo) & (conf <= hi)].mean()) for lo, hi in zip(edges[:-1], edges[1:])))


def calibrate_threshold(labels, probs):
    return float(np.median(probs[labels == 1]))


def test_report(test_labels, test_probs, val_labels, val_probs):
    threshold = calibrate_threshold(val_labels, val_probs)  # ok: MLS306
    return {
        "ece": expected_calibration_error(test_labels, test_probs),  # ok: MLS306
        "threshold": threshold,
        "tuned": calibrate_threshold(test_labels, test_probs),  # ruleid: MLS306
    }
