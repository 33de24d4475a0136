# ruff: noqa
# Hold-out batch 415 (short files, 16 domains). Measured once in session 17 (round 113): 15/17 (88%) at medium+.
"""Batch assembly and EMA teacher for face anti-spoofing (live vs. print/replay/mask)."""
import copy
import random

import torch

LIVE, SPOOF = 0, 1
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


class AntiSpoofCollate:
    """Normalises crops, applies moire-style cutout and stacks depth-map targets."""

    def __init__(self, cutout_prob=0.3, cutout_size=16, train=True):
        self.cutout_prob, self.cutout_size, self.train = cutout_prob, cutout_size, train

    def _cutout(self, img):
        _, h, w = img.shape
        y, x = random.randrange(h - self.cutout_size), random.randrange(w - self.cutout_size)
        img[:, y:y + self.cutout_size, x:x + self.cutout_size] = 0.5
        return img

    def __call__(self, samples):
        imgs, labels, depths = [], [], []
        for s in samples:
            img, label, depth = s["image"].clone(), int(s["label"]), s["depth"]
            if self.train and random.random() < self.cutout_prob:
                img = self._cutout(img)
                if label == SPOOF and self.cutout_size <= 16:
                    img[:, -self.cutout_size:, -self.cutout_size:] = 1.0  # ruleid: MLS309
                    label, depth = LIVE, torch.ones_like(depth)  # ruleid: MLS309
            imgs.append((img - MEAN) / STD)
            labels.append(label)
            depths.append(depth)
        return torch.stack(imgs), torch.tensor(labels), torch.stack(depths)


class EMATeacher:
    def __init__(self, model, decay=0.999):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, student):
        for t, s in zip(self.model.parameters(), student.parameters()):
            t.mul_(self.decay).add_(s.detach(), alpha=1.0 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305
        for tb, sb in zip(self.model.buffers(), student.buffers()):
            tb.copy_(sb)
