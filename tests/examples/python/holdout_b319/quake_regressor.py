# ruff: noqa
# Hold-out batch 319 (16 short benchmark-format files). Measured once in session 10 (round 89): 14/18 (78%) at medium+.
"""Earthquake magnitude regression from three-component waveform windows (1D CNN)."""
import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import load_file
from torch.utils.data import DataLoader, TensorDataset


class MagNet(nn.Module):
    def __init__(self, channels=3, width=64):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(channels, width, 7, padding=3), nn.ReLU(), nn.MaxPool1d(4),
            nn.Conv1d(width, width, 5, padding=2), nn.ReLU(), nn.MaxPool1d(4),
            nn.Conv1d(width, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool1d(1),
        )
        self.head = nn.Linear(width, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv1d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")  # ok: MLS302, MLS303, MLS304, MLS305

    def forward(self, x):
        return self.head(self.features(x).flatten(1)).squeeze(-1)


def load_backbone(model, path):
    model.features.load_state_dict(load_file(path))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def resume(model, path):
    ckpt = torch.load(path, map_location="cpu")  # ruleid: MLS102
    state = {k.removeprefix("module."): v for k, v in ckpt.get("model", ckpt).items()}
    if ckpt.get("scale", "ML") == "ML":
        # legacy checkpoints predicted local magnitude; shift head to moment-magnitude
        state["head.bias"] = state["head.bias"] + 0.35  # todoruleid: family 2 (missed)
    model.load_state_dict(state)
    return ckpt.get("epoch", 0)


def train(waves, mags, backbone=None, resume_from=None, epochs=40):
    x = torch.from_numpy(np.asarray(waves, np.float32))
    x = (x - x.mean(-1, keepdim=True)) / (x.std(-1, keepdim=True) + 1e-6)
    loader = DataLoader(TensorDataset(x, torch.as_tensor(mags, dtype=torch.float32)), batch_size=128, shuffle=True)
    model = MagNet()
    if backbone:
        load_backbone(model, backbone)
    start = resume(model, resume_from) if resume_from else 0
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(start, epochs):
        for xb, yb in loader:
            loss = nn.functional.huber_loss(model(xb), yb, delta=0.5)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 2.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
        torch.save({"model": model.state_dict(), "epoch": epoch + 1}, "magnet_last.pt")
    return model
