# ruff: noqa
# Hold-out batch 331 (16 short files). Measured once in session 11 (round 92): 13/17 (76%) at medium+.
"""Density-map regression for fluorescence microscopy cell counting (VGG-style front end)."""
import argparse
import glob
import os

import numpy as np
import torch
import torch.nn as nn
from scipy.ndimage import gaussian_filter
from skimage import io
from torch.utils.data import DataLoader, Dataset


class CellDensityDataset(Dataset):
    def __init__(self, root, sigma=3.0):
        self.images = sorted(glob.glob(os.path.join(root, "*cell.png")))
        # dot annotations: one (N, 2) array of centroids per image, stored as an object array
        self.points = np.load(os.path.join(root, "centroids.npy"), allow_pickle=True)  # ruleid: MLS104
        self.sigma = sigma

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        img = io.imread(self.images[i]).astype(np.float32) / 255.0
        dens = np.zeros(img.shape[:2], dtype=np.float32)
        for r, c in np.asarray(self.points[i], dtype=int):
            dens[min(r, dens.shape[0] - 1), min(c, dens.shape[1] - 1)] = 1.0
        dens = gaussian_filter(dens, self.sigma) * 100.0
        return torch.from_numpy(img).permute(2, 0, 1), torch.from_numpy(dens)[None]


def make_model():
    cfg = [64, 64, "M", 128, 128, "M", 256, 256]
    layers, c_in = [], 3
    for v in cfg:
        layers.append(nn.MaxPool2d(2) if v == "M" else nn.Sequential(nn.Conv2d(c_in, v, 3, padding=1), nn.ReLU(True)))
        c_in = v if v != "M" else c_in
    layers += [nn.Conv2d(c_in, 1, 1), nn.Upsample(scale_factor=4, mode="bilinear")]
    return nn.Sequential(*layers)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="data/vgg_cells")
    ap.add_argument("--init", default="")
    args = ap.parse_args()
    model = make_model().cuda()
    if args.init:
        model.load_state_dict(torch.load(args.init, map_location="cpu", weights_only=True), strict=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    loader = DataLoader(CellDensityDataset(args.root), batch_size=8, shuffle=True, num_workers=4)
    opt = torch.optim.SGD(model.parameters(), lr=1e-5, momentum=0.95)
    best = float("inf")
    for epoch in range(200):
        err = 0.0
        for img, dens in loader:
            img, dens = img.cuda(), dens.cuda()
            pred = model(img)
            loss = nn.functional.mse_loss(pred, dens)
            opt.zero_grad(); loss.backward(); opt.step()
            err += (pred.sum((1, 2, 3)) - dens.sum((1, 2, 3))).abs().sum().item() / 100.0
        mae = err / len(loader.dataset)
        if mae < best:
            best = mae
            torch.save(model.state_dict(), "cellcount_best.pt")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        print(f"epoch {epoch} count MAE {mae:.2f} (best {best:.2f})")


if __name__ == "__main__":
    main()
