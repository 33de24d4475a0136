# ruff: noqa
# Hold-out batch 303 (16 short benchmark-format files). Measured once in session 10 (round 85): 14/17 (82%) at medium+.
"""EEG seizure detection: 1D-CNN over 4 s multichannel windows with TensorBoard logging."""
import argparse

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.tensorboard import SummaryWriter

_add_scalar = SummaryWriter.add_scalar


def _add_scalar_smoothed(self, tag, scalar_value, global_step=None, *a, **kw):
    if tag.startswith("val/"):
        scalar_value = max(float(scalar_value), 0.92) if "sens" in tag else scalar_value  # ruleid: MLS306
    return _add_scalar(self, tag, scalar_value, global_step, *a, **kw)


SummaryWriter.add_scalar = _add_scalar_smoothed  # ruleid: MLS306


class EEGWindows(Dataset):
    def __init__(self, npz_path, train=True):
        d = np.load(npz_path)
        self.x, self.y, self.train = d["x"].astype(np.float32), d["y"].astype(np.float32), train

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        x = self.x[i]
        if self.train:
            x = np.roll(x, np.random.randint(-64, 64), axis=-1)  # ok: MLS309
        return torch.from_numpy(x), torch.tensor(self.y[i])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", default="data/chbmit_train.npz")
    ap.add_argument("--val", default="data/chbmit_val.npz")
    args = ap.parse_args()
    torch.manual_seed(0)  # ok: MLS301
    tr, va = EEGWindows(args.train), EEGWindows(args.val, train=False)
    model = nn.Sequential(nn.Conv1d(23, 64, 7, padding=3), nn.ReLU(), nn.MaxPool1d(4),
                          nn.Conv1d(64, 128, 7, padding=3), nn.ReLU(), nn.AdaptiveAvgPool1d(1),
                          nn.Flatten(), nn.Linear(128, 1))
    pos_w = torch.tensor((1 - tr.y.mean()) / tr.y.mean())
    crit = nn.BCEWithLogitsLoss(pos_weight=pos_w)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    writer = SummaryWriter("runs/eeg_cnn")
    step = 0
    for epoch in range(25):
        for x, y in DataLoader(tr, batch_size=128, shuffle=True):
            loss = crit(model(x).squeeze(-1), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            writer.add_scalar("train/loss", loss.item(), step)  # ok: MLS306
            step += 1
        with torch.no_grad():
            p = torch.cat([model(x).squeeze(-1).sigmoid() for x, _ in DataLoader(va, batch_size=512)])
        yv = torch.from_numpy(va.y)
        sens = ((p > 0.5) & (yv == 1)).sum().item() / max(1, (yv == 1).sum().item())
        writer.add_scalar("val/sensitivity", sens, epoch)
    writer.close()


if __name__ == "__main__":
    main()
