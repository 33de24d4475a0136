# ruff: noqa
# Hold-out batch 271 (short files). Measured once in session 9 (round 77): 16/17 (94%) at medium+.
"""Post-hoc temperature scaling of a trained CTR model and reliability (ECE) reporting."""
import argparse
import json

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file

from train_ctr import DeepFM
from ctr_data import make_loaders


class TemperatureScaler(nn.Module):
    def __init__(self):
        super().__init__()
        self.log_t = nn.Parameter(torch.zeros(1))
        with torch.no_grad():
            self.log_t.fill_(np.log(1.2))  # ok: MLS302, MLS303, MLS304, MLS305

    def forward(self, logits):
        return logits / self.log_t.exp()


def ece(probs, labels, n_bins=15):
    bins = np.linspace(0, 1, n_bins + 1)
    ids = np.clip(np.digitize(probs, bins) - 1, 0, n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        m = ids == b
        if m.any():
            total += m.mean() * abs(probs[m].mean() - labels[m].mean())
    return float(total)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default="deepfm.safetensors")
    args = ap.parse_args()
    _, val_dl, n_fields = make_loaders("/data/criteo", batch_size=8192)
    model = DeepFM(n_fields).cuda().eval()
    if args.weights.endswith(".safetensors"):
        model.load_state_dict(load_file(args.weights))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        model.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    with torch.no_grad():
        logits, labels = map(torch.cat, zip(*[(model(x.cuda()).cpu(), y.float()) for x, y in val_dl]))
    scaler = TemperatureScaler()
    opt = torch.optim.LBFGS(scaler.parameters(), lr=0.05, max_iter=100)

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(scaler(logits), labels)
        loss.backward()
        return loss

    opt.step(closure)  # ok: MLS302, MLS303, MLS304, MLS305
    before = ece(torch.sigmoid(logits).numpy(), labels.numpy())
    after = ece(torch.sigmoid(scaler(logits)).detach().numpy(), labels.numpy())
    report = {"temperature": float(scaler.log_t.exp()), "ece_before": before, "ece_after": after}  # ok: MLS306
    with open("calibration.json", "w") as fh:
        json.dump(report, fh, indent=2)


if __name__ == "__main__":
    main()
