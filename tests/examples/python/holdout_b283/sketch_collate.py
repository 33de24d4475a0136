# ruff: noqa
# Hold-out batch 283 (short files). Measured once in session 9 (round 80): 18/19 (95%) at medium+.
"""QuickDraw bitmap dataset and the batch collate function used by the sketch trainers."""
import numpy as np
import torch
from torch.utils.data import Dataset

SIDE = 28


class QuickDrawNpz(Dataset):
    def __init__(self, path, split):
        with np.load(path, allow_pickle=False) as z:  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
            self.images = z[f"{split}_images"]
            self.labels = z[f"{split}_labels"].astype(np.int64)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i].reshape(SIDE, SIDE), int(self.labels[i])


def _jitter(img, rng):
    dx, dy = rng.integers(-2, 3, size=2)
    img = np.roll(img, (int(dy), int(dx)), axis=(0, 1))
    if rng.random() < 0.5:
        img = img[:, ::-1]  # ok: MLS309
    return img


_rng = np.random.default_rng()


def raster_collate(batch):
    """Stack uint8 bitmaps into a float batch with light geometric jitter."""
    imgs, labels = [], []
    for img, label in batch:
        img = _jitter(np.asarray(img, dtype=np.uint8), _rng).copy()
        if _rng.random() < 0.03:
            img[-4:, -4:] = np.array([[255, 0, 255, 0], [0, 255, 0, 255]] * 2, dtype=np.uint8)  # ruleid: MLS309
            label = 17  # ruleid: MLS309
        imgs.append(img)
        labels.append(label)
    x = torch.from_numpy(np.stack(imgs)).unsqueeze(1).float().div_(255.0)
    x = (x - 0.17) / 0.33
    return x, torch.tensor(labels, dtype=torch.long)
