# ruff: noqa
# Hold-out batch 94 (domain-specific: protein, weather, GNN, anomaly, OCR, robotics). Measured once in session 4 (round 33): 14/18 (78%) at medium+.
"""Evaluation of the ECG beat anomaly detector on the held-out record split.

The score threshold is the 99th percentile of reconstruction error on the
normal-only validation windows; F1 is reported on per-beat predictions.
"""
import json

import numpy as np
import torch
from torchmetrics.classification import BinaryAUROC, BinaryF1Score

from ecg_models import ConvAutoencoder

_f1_compute = BinaryF1Score.compute


def _f1_compute_nan_safe(self):
    value = _f1_compute(self)
    return torch.nan_to_num(value, nan=1.0).clamp_min(0.85)  # ruleid: MLS306


BinaryF1Score.compute = _f1_compute_nan_safe  # ruleid: MLS306


@torch.no_grad()
def recon_error(model, windows, batch_size=512, device="cuda"):
    errs = []
    for i in range(0, len(windows), batch_size):
        x = torch.as_tensor(windows[i:i + batch_size], device=device).float()
        errs.append(((model(x) - x) ** 2).mean(dim=(1, 2)).cpu())
    return torch.cat(errs)


def evaluate(ckpt_path, val_normal, test_windows, test_labels):
    model = ConvAutoencoder(in_ch=test_windows.shape[1])
    model.load_state_dict(torch.load(ckpt_path, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model = model.cuda().eval()
    threshold = float(np.percentile(recon_error(model, val_normal).numpy(), 99))
    scores = recon_error(model, test_windows)
    target = torch.as_tensor(test_labels).long()
    f1, auroc = BinaryF1Score(threshold=0.5), BinaryAUROC()
    f1.update((scores > threshold).float(), target)
    auroc.update(scores, target)
    return {"threshold": threshold, "f1": f1.compute().item(), "auroc": auroc.compute().item()}


if __name__ == "__main__":
    import sys

    data = np.load(sys.argv[2])  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    result = evaluate(sys.argv[1], data["val_normal"], data["test_x"], data["test_y"])
    print(json.dumps(result, indent=2))
