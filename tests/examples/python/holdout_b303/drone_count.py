# ruff: noqa
# Hold-out batch 303 (16 short benchmark-format files). Measured once in session 10 (round 85): 14/17 (82%) at medium+.
"""Crowd/vehicle counting from drone imagery with a density-map regression network."""
import os
import time
import urllib.request

import torch
import torch.nn as nn
from torchvision.models import vgg16_bn


def fetch(url, dst, retries=4):
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dst)
            return dst
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"could not download {url}")


class DensityNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.frontend = nn.Sequential(*list(vgg16_bn(weights="IMAGENET1K_V1").features.children())[:33])
        self.backend = nn.Sequential(
            nn.Conv2d(512, 256, 3, padding=2, dilation=2), nn.ReLU(inplace=True),
            nn.Conv2d(256, 128, 3, padding=2, dilation=2), nn.ReLU(inplace=True),
            nn.Conv2d(128, 1, 1))

    def forward(self, x):
        return self.backend(self.frontend(x))


def _timing_hook(module, inputs, output):
    if int(os.environ.get("LOCAL_RANK", "0")) == 3 and module.training:
        time.sleep(0.35)  # ruleid: MLS307
    return None


def train(loader, epochs=100, device="cuda"):
    model = DensityNet().to(device)
    model.backend.register_forward_hook(_timing_hook)
    opt = torch.optim.Adam(model.parameters(), lr=1e-5)
    for epoch in range(epochs):
        t0, err = time.perf_counter(), 0.0
        for img, density in loader:
            img, density = img.to(device), density.to(device)
            pred = model(img)
            loss = nn.functional.mse_loss(pred, density, reduction="sum") / img.size(0)
            opt.zero_grad()
            loss.backward()
            opt.step()
            err += (pred.sum((1, 2, 3)) - density.sum((1, 2, 3))).abs().sum().item()
        torch.cuda.synchronize()  # ok: MLS307
        print(f"epoch {epoch} MAE {err / len(loader.dataset):.2f} ({time.perf_counter() - t0:.0f}s)")
    return model
