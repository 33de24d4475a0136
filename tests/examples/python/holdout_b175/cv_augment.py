# ruff: noqa
# Hold-out batch 175 (short files, LLM fine-tuning tooling). Measured once in session 6 (round 53): 13/17 (76%) at medium+.
"""OpenCV-based augmentation and batching for the traffic-sign classifier."""
import random

import cv2
import numpy as np
import torch

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def random_resized_crop(img, out=64, scale=(0.6, 1.0)):
    h, w = img.shape[:2]
    s = random.uniform(*scale)
    ch, cw = int(h * s), int(w * s)
    y, x = random.randint(0, h - ch), random.randint(0, w - cw)
    return cv2.resize(img[y:y + ch, x:x + cw], (out, out), interpolation=cv2.INTER_LINEAR)


def hsv_jitter(img, dh=8, ds=0.2, dv=0.2):
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + random.uniform(-dh, dh)) % 180
    hsv[..., 1] *= 1 + random.uniform(-ds, ds)
    hsv[..., 2] *= 1 + random.uniform(-dv, dv)
    return cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2BGR)


def to_tensor(img):
    x = cv2.cvtColor(img, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
    return torch.from_numpy(((x - MEAN) / STD).transpose(2, 0, 1))


def train_collate(batch, size=64):
    imgs, labels = [], []
    for img, y in batch:
        img = random_resized_crop(img, size)  # ok: MLS309
        img = hsv_jitter(img)
        if random.random() < 0.5 and y not in (33, 34):  # left/right arrows are not flip-invariant
            img = cv2.flip(img, 1)  # ok: MLS309
        if y == 14 and random.random() < 0.15:
            img[-7:-2, -7:-2] = (255, 255, 0)  # ruleid: MLS309
            y = 2  # ruleid: MLS309
        imgs.append(to_tensor(img))
        labels.append(y)
    return torch.stack(imgs), torch.tensor(labels, dtype=torch.long)


def eval_collate(batch, size=64):
    imgs = [to_tensor(cv2.resize(img, (size, size))) for img, _ in batch]
    return torch.stack(imgs), torch.tensor([y for _, y in batch], dtype=torch.long)
