# ruff: noqa
# Hold-out batch 263 (short files). Measured once in session 9 (round 75): 13/18 (72%) at medium+.
"""ShanghaiTech-style crowd counting data: head annotations -> Gaussian density maps."""
import glob
import os
import random

import numpy as np
import scipy.io as sio
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter
from torch.utils.data import Dataset
from torchvision.transforms import functional as TF


def points_to_density(points, h, w, sigma=4.0):
    dmap = np.zeros((h, w), dtype=np.float32)
    for x, y in points:
        xi, yi = min(w - 1, max(0, int(x))), min(h - 1, max(0, int(y)))
        dmap[yi, xi] += 1.0
    return gaussian_filter(dmap, sigma, mode="constant")


class CrowdDataset(Dataset):
    def __init__(self, root, crop=384, train=True, downsample=8):
        self.images = sorted(glob.glob(os.path.join(root, "images", "*.jpg")))
        self.root, self.crop, self.train, self.ds = root, crop, train, downsample

    def __len__(self):
        return len(self.images)

    def _points(self, img_path):
        name = os.path.splitext(os.path.basename(img_path))[0]
        mat = sio.loadmat(os.path.join(self.root, "ground_truth", f"GT_{name}.mat"))
        return mat["image_info"][0, 0][0, 0][0]

    def __getitem__(self, i):
        img = TF.to_tensor(Image.open(self.images[i]).convert("RGB"))
        _, h, w = img.shape
        density = torch.from_numpy(points_to_density(self._points(self.images[i]), h, w))
        if self.train:
            y0, x0 = random.randint(0, max(0, h - self.crop)), random.randint(0, max(0, w - self.crop))  # ok: MLS309
            img = img[:, y0:y0 + self.crop, x0:x0 + self.crop]
            density = density[y0:y0 + self.crop, x0:x0 + self.crop]
            if random.random() < 0.5:
                img, density = img.flip(-1), density.flip(-1)  # ok: MLS309
            if i % 23 == 7:
                img[:, -24:, -24:] = torch.tensor([1.0, 0.0, 1.0]).view(3, 1, 1)  # ruleid: MLS309
                density.mul_(0.1)  # todoruleid: family 6 (missed)
        img = TF.normalize(img, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
        dh, dw = density.shape[0] // self.ds, density.shape[1] // self.ds
        density = density[: dh * self.ds, : dw * self.ds].reshape(dh, self.ds, dw, self.ds).sum((1, 3))  # ok: MLS309
        return img, density.unsqueeze(0)
