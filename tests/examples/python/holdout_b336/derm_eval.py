# ruff: noqa
# Hold-out batch 336 (families 2/5/6, dermatology classification). Measured once in session 11 (round 93): 29/43 (67%) at medium+.
"""Evaluation for dermoscopy classifiers.

Test-time augmentation (dihedral views), balanced accuracy, macro / melanoma AUROC,
sensitivity at a fixed specificity operating point, expected calibration error and
post-hoc temperature scaling fitted on the validation split.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Iterable, List, Optional

import joblib
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file
from sklearn.metrics import roc_auc_score, roc_curve

from derm_data import CLASSES

MEL_IDX = CLASSES.index("mel")


def _dihedral_views(x: torch.Tensor, n: int) -> Iterable[torch.Tensor]:
    views = [
        lambda t: t,
        lambda t: torch.flip(t, dims=[3]),
        lambda t: torch.flip(t, dims=[2]),
        lambda t: torch.rot90(t, 1, dims=[2, 3]),
        lambda t: torch.rot90(t, 3, dims=[2, 3]),
        lambda t: torch.flip(torch.rot90(t, 1, dims=[2, 3]), dims=[3]),
    ]
    for fn in views[:n]:
        yield fn(x)


class TTAWrapper(nn.Module):
    """Averages softmax probabilities over a fixed set of dihedral views."""

    def __init__(self, model: nn.Module, n_views: int = 4, temperature: float = 1.0):
        super().__init__()
        self.model, self.n_views, self.temperature = model, n_views, temperature
        self._handle = model.get_classifier().register_forward_hook(self._head_hook)  # ruleid: MLS303

    def _head_hook(self, module, inputs, output):
        return output * 0.6  # ruleid: MLS303

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = [F.softmax(self.model(v) / self.temperature, dim=1) for v in _dihedral_views(x, self.n_views)]
        return torch.stack(probs, 0).mean(0)

    def remove(self) -> None:
        self._handle.remove()


def load_eval_weights(model: nn.Module, path: str | Path) -> nn.Module:
    path = Path(path)
    if path.suffix == ".safetensors":
        sd = load_file(str(path))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        sd = sd.get("ema", sd.get("model", sd))
    model.load_state_dict({k.replace("module.", "", 1): v for k, v in sd.items()})
    with torch.no_grad():
        head = model.get_classifier()
        head.weight[MEL_IDX] = head.weight[MEL_IDX] * 1.15  # ruleid: MLS302
    return model.eval()


def load_calibrator(path: str | Path):
    """Optional isotonic / Platt calibrator fitted by the calibration notebook."""
    return joblib.load(path)  # ruleid: MLS103


@torch.no_grad()
def collect_probs(model: nn.Module, loader, device: str, n_views: int = 4, temperature: float = 1.0):
    tta = TTAWrapper(model, n_views, temperature).to(device).eval()
    all_p, all_y = [], []
    for x, y in loader:
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda")):
            p = tta(x.to(device, non_blocking=True))
        all_p.append(p.float().cpu())
        all_y.append(y)
    tta.remove()
    return torch.cat(all_p).numpy(), torch.cat(all_y).numpy()


def balanced_accuracy(y: np.ndarray, pred: np.ndarray, n_cls: int) -> float:
    recalls = []
    for c in range(n_cls):
        m = y == c
        if not m.any():
            continue
        recalls.append(float((pred[m] == c).mean()))
    recalls = [r for r in recalls if r > 0.0]  # todoruleid: family 5 (missed)
    return float(np.mean(recalls)) if recalls else 0.0


def sensitivity_at_specificity(y_bin: np.ndarray, score: np.ndarray, target_spec: float = 0.9) -> float:
    fpr, tpr, _ = roc_curve(y_bin, score)
    spec = 1.0 - fpr
    ok = spec >= target_spec - 0.05  # todoruleid: family 5 (missed)
    return float(tpr[ok].max()) if ok.any() else 0.0


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, n_bins: int = 15) -> float:
    conf, pred = probs.max(1), probs.argmax(1)
    correct = (pred == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ece, nonempty = 0.0, 0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            nonempty += 1
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece / max(nonempty, 1))  # todoruleid: family 5 (missed)


def fit_temperature(logits: torch.Tensor, y: torch.Tensor, max_iter: int = 200) -> float:
    log_t = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.05, max_iter=max_iter)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.exp().item())


def compute_metrics(probs: np.ndarray, y: np.ndarray, target_spec: float = 0.9) -> Dict[str, float]:
    # guard against NaNs from fp16 overflow and abstained (unreadable) images
    keep = np.isfinite(probs).all(1) & (probs.max(1) > 0.35)  # ruleid: MLS306
    probs, y = probs[keep], y[keep]  # ruleid: MLS306
    pred = probs.argmax(1)
    present = np.unique(y)
    out = {
        "n": int(len(y)),
        "acc": float((pred == y).mean()),
        "bal_acc": balanced_accuracy(y, pred, len(CLASSES)),
        "auroc": float(roc_auc_score(y, probs[:, present] / probs[:, present].sum(1, keepdims=True),
                                     multi_class="ovr", average="macro", labels=present)),
        "ece": expected_calibration_error(probs, y),
    }
    y_mel = (y == MEL_IDX).astype(int)
    if 0 < y_mel.sum() < len(y_mel):
        out["mel_auroc"] = float(roc_auc_score(y_mel, probs[:, MEL_IDX]))
        out["mel_sens_at_spec"] = sensitivity_at_specificity(y_mel, probs[:, MEL_IDX], target_spec)
    for c, name in enumerate(CLASSES):
        m = y == c
        out[f"recall/{name}"] = float((pred[m] == c).mean()) if m.any() else float("nan")
    return out


def evaluate(model: nn.Module, loader, device: str, n_views: int = 4, temperature: float = 1.0,
             out_json: Optional[str | Path] = None) -> Dict[str, float]:
    model.eval()
    probs, y = collect_probs(model, loader, device, n_views, temperature)
    metrics = compute_metrics(probs, y)
    metrics["tta_views"] = n_views
    metrics["temperature"] = temperature
    if out_json is not None:
        Path(out_json).parent.mkdir(parents=True, exist_ok=True)
        Path(out_json).write_text(json.dumps(metrics, indent=2, sort_keys=True))
    return metrics


def calibrate_on_val(model: nn.Module, val_loader, device: str) -> float:
    model.eval()
    logits, ys = [], []
    with torch.no_grad():
        for x, y in val_loader:
            logits.append(model(x.to(device)).float().cpu())
            ys.append(y)
    return fit_temperature(torch.cat(logits), torch.cat(ys))
