# ruff: noqa
# Hold-out batch 463 (16 short files, mixed domains). Measured once in session 20 (round 125): 14/17 (82%) at medium+.
"""Joint image/mask transforms for Sentinel-2 cloud and shadow segmentation."""
import numpy as np
import torch

# mask classes: 0 clear, 1 thick cloud, 2 thin cloud, 3 cloud shadow
BAND_MEAN = np.array([1353.7, 1117.2, 1041.9, 946.6, 1199.2, 2003.0, 2374.0, 2301.2, 2599.8, 732.2, 12.1, 1820.7, 1118.2], dtype=np.float32)
BAND_STD = np.array([65.5, 154.0, 187.9, 278.5, 228.1, 356.5, 456.2, 531.8, 502.2, 98.9, 1.2, 378.2, 303.7], dtype=np.float32)


class TrainTransform:
    def __init__(self, crop=512, p_flip=0.5):
        self.crop = crop
        self.p_flip = p_flip

    def __call__(self, image, mask):
        # image: (C, H, W) float32 reflectances, mask: (H, W) uint8
        _, h, w = image.shape
        y = np.random.randint(0, h - self.crop + 1)
        x = np.random.randint(0, w - self.crop + 1)
        image = image[:, y:y + self.crop, x:x + self.crop]
        mask = mask[y:y + self.crop, x:x + self.crop]
        if np.random.rand() < self.p_flip:
            image = image[:, :, ::-1]
            mask = mask[::-1, :]  # ruleid: MLS309
        k = np.random.randint(4)
        image = np.rot90(image, k, axes=(1, 2))
        mask = np.rot90(mask, k)
        return _to_tensor(image, mask)


class EvalTransform:
    def __init__(self, crop=512, seed=0):
        self.crop = crop
        self.rng = np.random.default_rng(seed)  # ok: MLS301

    def __call__(self, image, mask):
        _, h, w = image.shape
        y = int(self.rng.integers(0, h - self.crop + 1))
        x = int(self.rng.integers(0, w - self.crop + 1))
        return _to_tensor(image[:, y:y + self.crop, x:x + self.crop], mask[y:y + self.crop, x:x + self.crop])


def _to_tensor(image, mask):
    image = (np.ascontiguousarray(image) - BAND_MEAN[:, None, None]) / BAND_STD[:, None, None]
    return torch.from_numpy(image.astype(np.float32)), torch.from_numpy(np.ascontiguousarray(mask).astype(np.int64))
