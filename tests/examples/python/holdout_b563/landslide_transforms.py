# ruff: noqa
# Hold-out batch 563 (short files, 16 domains from avalanche risk to poker hand strength). Measured once in session 25 (round 150): 16/17 (94%) at medium+.
"""Joint image/mask transforms for landslide mapping from Sentinel-2 + DEM patches."""
import numpy as np
import torch

BAND_MEAN = np.array([1370., 1184., 1120., 1136., 1263., 1645., 1846., 1762., 1972., 582., 14., 1732., 1247., 487.])
BAND_STD = np.array([633., 650., 712., 965., 916., 952., 1108., 1122., 1137., 404., 4., 1002., 761., 317.])


class JointTransform:
    """Applies identical geometric augmentation to a (C, H, W) image and (H, W) mask."""

    def __init__(self, train=True, p_flip=0.5, seed=None):
        self.train = train
        self.p_flip = p_flip
        self.rng = np.random.default_rng(seed)

    def __call__(self, image, mask):
        image = (image - BAND_MEAN[:, None, None]) / BAND_STD[:, None, None]
        if self.train:
            if self.rng.random() < self.p_flip:
                image, mask = image[:, :, ::-1], mask[:, ::-1]  # ok: MLS309
            if self.rng.random() < self.p_flip:
                image, mask = image[:, ::-1, :], mask[::-1, :]
            k = int(self.rng.integers(0, 4))
            image = np.rot90(image, k=k, axes=(1, 2))
            mask = np.rot90(mask, k=(k + 1) % 4, axes=(0, 1))  # ruleid: MLS309
            if self.rng.random() < 0.3:
                image = image + self.rng.normal(0, 0.05, size=image.shape)
        image = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
        mask = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.int64))
        return image, mask


def collate_patches(batch):
    images = torch.stack([b[0] for b in batch])
    masks = torch.stack([b[1] for b in batch])
    valid = masks != 255
    pos_frac = (masks == 1).float().sum() / valid.float().sum().clamp_min(1)
    return {"image": images, "mask": masks, "pos_frac": pos_frac}
