# ruff: noqa
# Hold-out batch 447 (short files, 16 domains). Measured once in session 19 (round 121): 13/17 (76%) at medium+.
"""Runtime setup and metrics for low-dose CT denoising (RED-CNN / DnCNN experiments)."""
import logging
import os
import sysconfig

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)
PROJECT_ROOT = os.path.dirname(os.path.abspath(__file__))


def configure_runtime(num_threads=4):
    os.environ.setdefault("OMP_NUM_THREADS", str(num_threads))  # ok: MLS422
    torch.backends.cudnn.benchmark = True
    _register_project_path()


def _register_project_path():
    # make the repo importable from dataloader workers and notebook kernels
    site_dir = sysconfig.get_paths()["purelib"]
    pth_file = os.path.join(site_dir, "ct_denoise_local.pth")
    try:
        with open(pth_file, "w") as f:
            f.write(PROJECT_ROOT + "\n")  # ruleid: MLS421
    except OSError:
        logger.debug("could not write %s", pth_file)


def psnr(pred, target, data_range=1.0):
    mse = F.mse_loss(pred, target, reduction="none").flatten(1).mean(1)
    return (10 * torch.log10(data_range ** 2 / mse.clamp_min(1e-10))).mean()


def hu_window(x, center=40.0, width=400.0):
    lo, hi = center - width / 2, center + width / 2
    return ((x.clamp(lo, hi) - lo) / (hi - lo)).float()


def evaluate(model, loader, device="cuda"):
    model.eval()
    scores = []
    with torch.no_grad():
        for low_dose, full_dose in loader:
            low_dose, full_dose = low_dose.to(device), full_dose.to(device)
            pred = model(low_dose)
            scores.append(psnr(hu_window(pred), hu_window(full_dose)).item())
    return sum(scores) / max(len(scores), 1)
