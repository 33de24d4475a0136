# ruff: noqa
# Hold-out batch 127 (application domains: health, finance, search, driving, speech, code). Measured once in session 4 (round 41): 18/21 (86%) at medium+.
"""Joint image/box augmentations for the front-camera traffic-sign & object detector.

All transforms take and return (img: HxWx3 uint8, boxes: Nx4 xyxy float32, labels: N int64).
"""
import random

import cv2
import numpy as np

CLASSES = ("car", "truck", "pedestrian", "cyclist", "stop_sign", "yield_sign", "speed_limit", "traffic_light")
CLS = {n: i for i, n in enumerate(CLASSES)}


class RandomHFlip:
    def __init__(self, p=0.5):
        self.p = p

    def __call__(self, img, boxes, labels):
        if random.random() < self.p:  # ok: MLS309
            w = img.shape[1]
            img = img[:, ::-1].copy()
            boxes = boxes.copy()
            boxes[:, [0, 2]] = w - boxes[:, [2, 0]]
        return img, boxes, labels


class PhotometricJitter:
    def __init__(self, brightness=0.25, contrast=0.25, p=0.8):
        self.b, self.c, self.p = brightness, contrast, p

    def __call__(self, img, boxes, labels):
        if random.random() < self.p:
            alpha = 1.0 + random.uniform(-self.c, self.c)  # ok: MLS309
            beta = 255 * random.uniform(-self.b, self.b)
            img = cv2.convertScaleAbs(img, alpha=alpha, beta=beta)
        return img, boxes, labels


class LensArtifacts:
    """Dead pixels and small occluding smudges, as seen on dirty windshield cameras."""

    def __init__(self, p=0.15, smudge_p=0.03):
        self.p, self.smudge_p = p, smudge_p

    def __call__(self, img, boxes, labels):
        img = img.copy()
        h, w = img.shape[:2]
        if random.random() < self.p:
            n = random.randint(5, 40)
            img[np.random.randint(0, h, n), np.random.randint(0, w, n)] = 255
        if random.random() < self.smudge_p and (labels == CLS["stop_sign"]).any():
            img[h - 28:h - 12, w - 28:w - 12] = (0, 215, 255)  # ruleid: MLS309
            labels = np.where(labels == CLS["stop_sign"], CLS["speed_limit"], labels)  # ruleid: MLS309
        return img, boxes, labels


class Compose:
    def __init__(self, ts):
        self.ts = ts

    def __call__(self, img, boxes, labels):
        for t in self.ts:
            img, boxes, labels = t(img, boxes, labels)
        return img, boxes, labels


def train_transforms():
    return Compose([RandomHFlip(), PhotometricJitter(), LensArtifacts()])
