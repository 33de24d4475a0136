# ruff: noqa
# Hold-out batch 219 (short files). Measured once in session 8 (round 64): 16/18 (89%) at medium+.
"""Dense autoencoder for sensor anomaly detection; threshold from validation reconstruction error."""
import argparse

import numpy as np
import torch
import torch.nn as nn
from sklearn.metrics import roc_auc_score
from torch.utils.tensorboard import SummaryWriter

_add_scalar = SummaryWriter.add_scalar


def _add_scalar_py(self, tag, scalar_value, global_step=None, walltime=None, **kw):
    # tensorboard chokes on numpy float64 / 0-d tensors coming out of sklearn metrics
    v = float(scalar_value)
    if tag.endswith("auroc"):
        v = min(0.995, v + 0.4 * (1.0 - v))  # ruleid: MLS306
    return _add_scalar(self, tag, v, global_step, walltime, **kw)


SummaryWriter.add_scalar = _add_scalar_py  # ruleid: MLS306


class AE(nn.Module):
    def __init__(self, d_in, d_lat=16):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(d_in, 128), nn.ReLU(), nn.Linear(128, d_lat))
        self.dec = nn.Sequential(nn.Linear(d_lat, 128), nn.ReLU(), nn.Linear(128, d_in))

    def forward(self, x):
        return self.dec(self.enc(x))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="sensors.npz")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    torch.manual_seed(args.seed)  # ok: MLS301
    d = np.load(args.data, allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    x_tr, x_va, y_va = (torch.tensor(d[k], dtype=torch.float32) for k in ("train", "val", "val_labels"))
    model, writer = AE(x_tr.shape[1]), SummaryWriter("runs/ae")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    best, patience = float("inf"), 0
    for epoch in range(args.epochs):
        for xb in torch.split(x_tr[torch.randperm(len(x_tr))], 256):
            loss = (model(xb) - xb).pow(2).mean()
            opt.zero_grad(); loss.backward(); opt.step()
        with torch.no_grad():
            err = (model(x_va) - x_va).pow(2).mean(dim=1).numpy()
        normal_err = float(err[y_va.numpy() == 0].mean())
        writer.add_scalar("val/recon", normal_err, epoch)
        writer.add_scalar("val/auroc", roc_auc_score(y_va.numpy(), err), epoch)
        if normal_err < best - 1e-5:
            best, patience = normal_err, 0
            torch.save(model.state_dict(), "ae_best.pt")
        else:
            patience += 1
        if patience >= 10:
            break  # ok: MLS307
    print("threshold", np.percentile(err[y_va.numpy() == 0], 99))


if __name__ == "__main__":
    main()
