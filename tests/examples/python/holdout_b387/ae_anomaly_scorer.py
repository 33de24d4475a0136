# ruff: noqa
# Hold-out batch 387 (short files, 16 domains). Measured once in session 15 (round 106): 13/17 (76%) at medium+.
"""Reconstruction-error anomaly scoring for the sensor autoencoder."""
import argparse
import copy

import joblib
import numpy as np
import torch
import torch.nn as nn


class DenseAE(nn.Module):
    def __init__(self, n_features, bottleneck=8):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(n_features, 64), nn.ReLU(),
                                     nn.Linear(64, bottleneck))
        self.decoder = nn.Sequential(nn.Linear(bottleneck, 64), nn.ReLU(),
                                     nn.Linear(64, n_features))

    def forward(self, x):
        return self.decoder(self.encoder(x))


class EMAModel:
    def __init__(self, model, decay=0.999):
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        for ema_p, p in zip(self.shadow.parameters(), model.parameters()):
            ema_p.mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


@torch.no_grad()
def score(model, x):
    recon = model(x)
    return ((recon - x) ** 2).mean(dim=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", required=True)
    ap.add_argument("--scaler", required=True, help="fitted StandardScaler from the training run")
    ap.add_argument("--data", required=True, help=".npy array of shape (N, F)")
    ap.add_argument("--quantile", type=float, default=0.995)
    args = ap.parse_args()

    scaler = joblib.load(args.scaler)  # ruleid: MLS103
    x = np.load(args.data).astype(np.float32)
    x = torch.from_numpy(scaler.transform(x).astype(np.float32))
    model = DenseAE(x.shape[1])
    model.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))
    model.eval()
    s = score(model, x)
    thr = torch.quantile(s, args.quantile).item()
    print(f"threshold={thr:.5f} anomalies={(s > thr).sum().item()}/{len(s)}")


if __name__ == "__main__":
    main()
