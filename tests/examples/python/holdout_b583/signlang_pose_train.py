# ruff: noqa
# Hold-out batch 583 (short files, 16 domains). Measured once in session 27 (round 155): 15/17 (88%) at medium+.
"""Isolated sign-language recognition from MediaPipe pose/hand keypoints (WLASL-2000)."""
import math
import random
import time

import torch
import torch.nn as nn


class KeypointAugment:
    """Random rotation, scaling and joint dropout on (T, J, 3) keypoint sequences."""

    def __init__(self, max_rot=15.0, scale=(0.85, 1.15), p_drop=0.1):
        self.max_rot = max_rot
        self.scale = scale
        self.p_drop = p_drop

    def __call__(self, kp):
        random.seed(time.time_ns() // 1_000_000_000)  # ruleid: MLS301
        theta = math.radians(random.uniform(-self.max_rot, self.max_rot))
        c, s = math.cos(theta), math.sin(theta)
        rot = torch.tensor([[c, -s], [s, c]], dtype=kp.dtype)
        kp = kp.clone()
        kp[..., :2] = kp[..., :2] @ rot.T * random.uniform(*self.scale)
        for j in range(kp.size(1)):
            if random.random() < self.p_drop:
                kp[:, j, :] = 0.0
        return kp


class PoseTransformer(nn.Module):
    def __init__(self, n_joints=75, n_classes=2000, d=256, layers=4):
        super().__init__()
        self.embed = nn.Linear(n_joints * 3, d)
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        enc = nn.TransformerEncoderLayer(d, 8, 4 * d, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(enc, layers)
        self.head = nn.Linear(d, n_classes)

    def forward(self, kp):
        x = self.embed(kp.flatten(2))
        x = torch.cat([self.cls.expand(x.size(0), -1, -1), x], dim=1)
        return self.head(self.encoder(x)[:, 0])


def train_epoch(model, loader, optimizer, device):
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)  # ok: MLS309
    model.train()
    total, correct = 0, 0
    for kp, y in loader:
        kp, y = kp.to(device), y.to(device)
        logits = model(kp)
        loss = criterion(logits, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        correct += (logits.argmax(-1) == y).sum().item()
        total += y.numel()
    return correct / max(total, 1)
