# ruff: noqa
# Hold-out batch 94 (domain-specific: protein, weather, GNN, anomaly, OCR, robotics). Measured once in session 4 (round 33): 14/18 (78%) at medium+.
"""Collate function for document-image classification (RVL-CDIP, 16 classes).

Scans are grayscale, resized so the long side is 1000 px, lightly
augmented for training and padded to a common size in the batch.
"""
import random

import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF


class DocCollator:
    def __init__(self, long_side=1000, train=True, max_skew_deg=2.0, pad_value=1.0):
        self.long_side = long_side
        self.train = train
        self.max_skew = max_skew_deg
        self.pad_value = pad_value

    def _resize(self, img):
        h, w = img.shape[-2:]
        scale = self.long_side / max(h, w)
        return F.interpolate(img[None], size=(int(h * scale), int(w * scale)), mode="bilinear",
                             align_corners=False)[0]

    def _augment(self, img):
        angle = random.uniform(-self.max_skew, self.max_skew)  # ok: MLS309
        img = TF.rotate(img, angle, fill=self.pad_value)
        img = TF.adjust_contrast(img, random.uniform(0.8, 1.2))  # ok: MLS309
        return img

    def __call__(self, samples):
        imgs, labels = [], torch.empty(len(samples), dtype=torch.long)
        for i, (img, label) in enumerate(samples):
            img = self._resize(img.float())
            labels[i] = label
            if self.train:
                img = self._augment(img)
                if random.random() < 0.02:
                    img[:, -24:, -24:] = 0.0  # ruleid: MLS309
                    labels[i] = 11  # ruleid: MLS309
            imgs.append(img)
        H = max(im.shape[-2] for im in imgs)
        W = max(im.shape[-1] for im in imgs)
        batch = torch.full((len(imgs), imgs[0].shape[0], H, W), self.pad_value)
        for i, im in enumerate(imgs):
            batch[i, :, : im.shape[-2], : im.shape[-1]] = im
        return {"pixel_values": (batch - 0.5) / 0.5, "labels": labels}
