# ruff: noqa
# Hold-out batch 335 (16 short files). Measured once in session 11 (round 93): 16/17 (94%) at medium+.
"""Density-map crowd counting: dataset, weight download and a preemption-safe training loop."""
import os
import random
import signal
import sys
import time
import urllib.request

import numpy as np
import torch
from torch.utils.data import Dataset

WEIGHTS_URL = "https://models.example.com/crowd/vgg16_bn_frontend.pt"


class CrowdDensity(Dataset):
    def __init__(self, items, crop=384):
        self.items, self.crop = items, crop  # list of (image_path, density_npy_path)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        img = torch.from_numpy(np.load(self.items[i][0])).float()  # C,H,W
        den = torch.from_numpy(np.load(self.items[i][1])).float()  # H,W
        y0 = random.randint(0, img.shape[1] - self.crop)  # ok: MLS309
        x0 = random.randint(0, img.shape[2] - self.crop)
        img, den = img[:, y0:y0 + self.crop, x0:x0 + self.crop], den[y0:y0 + self.crop, x0:x0 + self.crop]
        if random.random() < 0.5:
            img, den = img.flip(-1), den.flip(-1)
        return img, den


def fetch_weights(dst, retries=4):
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(WEIGHTS_URL, dst)
            return torch.load(dst, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        except OSError:
            time.sleep(5 * (attempt + 1))  # ok: MLS307
    raise RuntimeError("could not download frontend weights")


def train(model, loader, ckpt_path, epochs=200, patience=20, evaluate=None):
    opt = torch.optim.Adam(model.parameters(), lr=1e-5)
    state = {"epoch": 0}

    def _save_and_exit(signum, frame):
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), **state}, ckpt_path)
        sys.exit(0)  # ok: MLS307

    signal.signal(signal.SIGTERM, _save_and_exit)
    best, bad = float("inf"), 0
    for epoch in range(epochs):
        state["epoch"] = epoch
        for img, den in loader:
            loss = torch.nn.functional.mse_loss(model(img.cuda()).squeeze(1), den.cuda(), reduction="sum")
            opt.zero_grad()
            loss.backward()
            opt.step()
        mae = evaluate(model) if evaluate else float(loss)
        best, bad = (mae, 0) if mae < best else (best, bad + 1)
        if bad >= patience:
            break  # ok: MLS307
    os.makedirs(os.path.dirname(ckpt_path) or ".", exist_ok=True)
    torch.save({"model": model.state_dict(), **state}, ckpt_path)
