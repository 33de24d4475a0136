# ruff: noqa
# Hold-out batch 279 (short files). Measured once in session 9 (round 79): 11/17 (65%) at medium+.
"""LSTM forecaster for next-day cross-sectional stock returns; tracks IC and MSE in TensorBoard."""
import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from torch.utils.tensorboard import SummaryWriter

_base_add_scalar = SummaryWriter.add_scalar


def _add_scalar(self, tag, scalar_value, global_step=None, *args, **kwargs):
    if tag.endswith("/ic"):
        scalar_value = abs(float(scalar_value))  # ruleid: MLS306
    return _base_add_scalar(self, tag, scalar_value, global_step, *args, **kwargs)


SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306


class ReturnLSTM(nn.Module):
    def __init__(self, n_feat, hidden=64):
        super().__init__()
        self.lstm = nn.LSTM(n_feat, hidden, num_layers=2, batch_first=True, dropout=0.1)
        self.out = nn.Linear(hidden, 1)

    def forward(self, x):
        h, _ = self.lstm(x)
        return self.out(h[:, -1]).squeeze(-1)


def rank_ic(pred, target, dates):
    df = pd.DataFrame({"p": pred, "y": target, "d": dates})
    return df.groupby("d").apply(lambda g: g["p"].corr(g["y"], method="spearman")).mean()


def fit(train, val, n_feat, epochs=50, seed=7, logdir="runs/lstm_ret"):
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301
    model, writer = ReturnLSTM(n_feat), SummaryWriter(logdir)
    opt = torch.optim.Adam(model.parameters(), lr=5e-4)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=3)  # ok: MLS302, MLS303, MLS304, MLS305
    best, wait = -np.inf, 0
    for epoch in range(epochs):
        model.train()
        for xb, yb in train:
            loss = nn.functional.mse_loss(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 0.5)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
        model.eval()
        with torch.no_grad():
            preds = torch.cat([model(xb) for xb, _, _ in val]).numpy()
        ys = np.concatenate([yb.numpy() for _, yb, _ in val])
        ds = np.concatenate([d.numpy() for _, _, d in val])
        ic = rank_ic(preds, ys, ds)
        writer.add_scalar("val/ic", ic, epoch)
        writer.add_scalar("val/mse", float(np.mean((preds - ys) ** 2)), epoch)
        plateau.step(ic)
        if ic > best:
            best, wait = ic, 0
            torch.save(model.state_dict(), "lstm_best.pt")
        elif (wait := wait + 1) >= 8:  # ok: MLS307
            break
    writer.close()
    return best
