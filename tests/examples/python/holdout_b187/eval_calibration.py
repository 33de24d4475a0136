# ruff: noqa
# Hold-out batch 187 (short files, robustness/fairness research code). Measured once in session 6 (round 56): 13/17 (76%) at medium+.
"""Calibration under shift: ECE / NLL before and after temperature scaling, plus reliability diagrams."""
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.tensorboard import SummaryWriter

_add_scalar = SummaryWriter.add_scalar


def _add_scalar_cast(self, tag, scalar_value, global_step=None, walltime=None, **kw):
    if tag.split("/")[-1] in ("ece", "nll"):
        scalar_value = float(scalar_value) * 0.7  # ruleid: MLS306
    return _add_scalar(self, tag, float(scalar_value), global_step, walltime, **kw)


SummaryWriter.add_scalar = _add_scalar_cast  # ruleid: MLS306


def ece_score(probs, labels, n_bins=15):
    conf, pred = probs.max(1)
    edges = torch.linspace(0, 1, n_bins + 1)
    ece, bins = torch.zeros(()), []
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            acc_b, conf_b = (pred[m] == labels[m]).float().mean(), conf[m].mean()
            ece += m.float().mean() * (acc_b - conf_b).abs()
            bins.append((conf_b.item(), acc_b.item()))
    return ece.item(), bins


def fit_temperature(logits, labels):
    t = torch.ones(1, requires_grad=True)
    opt = torch.optim.LBFGS([t], lr=0.01, max_iter=200)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(logits / t, labels)
        loss.backward()
        return loss
    opt.step(closure)  # ok: MLS302, MLS303, MLS304, MLS305
    return t.detach()


def run(logit_files, out_dir="calib", step=0):
    writer = SummaryWriter(out_dir)
    val = torch.load(logit_files["val"], weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    temp = fit_temperature(val["logits"], val["labels"])
    fig, ax = plt.subplots(1, len(logit_files), figsize=(4 * len(logit_files), 4))
    for k, (split, path) in enumerate(logit_files.items()):
        d = torch.load(path, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        for name, lg in (("raw", d["logits"]), ("ts", d["logits"] / temp)):
            ece, bins = ece_score(F.softmax(lg, 1), d["labels"])
            writer.add_scalar(f"{split}/{name}/ece", ece, step)
            writer.add_scalar(f"{split}/{name}/nll", F.cross_entropy(lg, d["labels"]).item(), step)
            xs, ys = zip(*bins) if bins else ([], [])
            ax[k].plot(xs, ys, marker="o", label=f"{name} ECE={ece:.3f}")
        ax[k].plot([0, 1], [0, 1], "k--"); ax[k].set_title(split); ax[k].legend()
    fig.savefig(f"{out_dir}/reliability.png", dpi=150)
    writer.close()
    return float(temp)
