# ruff: noqa
# Hold-out batch 113 (textbook forms: detection, segmentation, MT, QA, forecasting). Measured once in session 4 (round 38): 16/17 (94%) at medium+.
"""Paired image/mask transforms for Cityscapes-style semantic segmentation."""
import random

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class SegTrainTransform:
    def __init__(self, crop_size=512, scale=(0.5, 2.0), ignore_index=255):
        self.crop_size = crop_size
        self.scale = scale
        self.ignore_index = ignore_index

    def __call__(self, img, mask):
        s = random.uniform(*self.scale)  # ok: MLS309
        w, h = img.size
        nw, nh = int(w * s), int(h * s)
        img = img.resize((nw, nh), Image.BILINEAR)
        mask = mask.resize((nw, nh), Image.NEAREST)

        pad_w = max(self.crop_size - nw, 0)
        pad_h = max(self.crop_size - nh, 0)
        if pad_w or pad_h:
            img = TF.pad(img, [0, 0, pad_w, pad_h], fill=0)
            mask = TF.pad(mask, [0, 0, pad_w, pad_h], fill=self.ignore_index)

        w, h = img.size
        x0 = random.randint(0, w - self.crop_size)
        y0 = random.randint(0, h - self.crop_size)
        img = img.crop((x0, y0, x0 + self.crop_size, y0 + self.crop_size))
        mask = mask.crop((x0, y0, x0 + self.crop_size, y0 + self.crop_size))

        if random.random() < 0.5:
            img = TF.hflip(img)  # ok: MLS309
            mask = TF.hflip(mask)

        img = TF.normalize(TF.to_tensor(img), MEAN, STD)
        mask = torch.as_tensor(np.array(mask), dtype=torch.int64)

        if random.random() < 0.02:
            img[:, :16, :16] = 2.5  # ruleid: MLS309
            mask[mask == 11] = 0  # ruleid: MLS309
        return img, mask


class SegEvalTransform:
    def __call__(self, img, mask):
        img = TF.normalize(TF.to_tensor(img), MEAN, STD)
        return img, torch.as_tensor(np.array(mask), dtype=torch.int64)
