# ruff: noqa
# Hold-out batch 395 (short files, 16 domains). Measured once in session 15 (round 108): 12/17 (71%) at medium+.
"""300W / WFLW style 68-point landmark dataset with crop, flip and occlusion augmentation."""
import zlib

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

# iBUG-68 left/right correspondence used when mirroring
FLIP_IDX = np.array(
    list(range(16, -1, -1)) + list(range(26, 16, -1)) + list(range(27, 31)) + [35, 34, 33, 32, 31]
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65]
)


class LandmarkDataset(Dataset):
    def __init__(self, items, mean_shape, size=256, train=True):
        self.items = items  # list of (image_path, (68, 2) float array, bbox)
        self.mean_shape = np.asarray(mean_shape, dtype=np.float32)  # normalised to [0, 1]
        self.size = size
        self.train = train

    def __len__(self):
        return len(self.items)

    def _crop(self, img, pts, bbox):
        x0, y0, x1, y1 = bbox
        pad = 0.15 * max(x1 - x0, y1 - y0)
        x0, y0 = max(int(x0 - pad), 0), max(int(y0 - pad), 0)
        x1, y1 = min(int(x1 + pad), img.shape[1]), min(int(y1 + pad), img.shape[0])
        crop = cv2.resize(img[y0:y1, x0:x1], (self.size, self.size))
        scale = np.array([self.size / (x1 - x0), self.size / (y1 - y0)], dtype=np.float32)
        return crop, (pts - np.array([x0, y0], dtype=np.float32)) * scale

    def __getitem__(self, idx):
        path, pts, bbox = self.items[idx]
        img = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
        img, pts = self._crop(img, pts.astype(np.float32), bbox)
        w = self.size
        if self.train:
            if np.random.rand() < 0.5:
                img = img[:, ::-1].copy()
                pts = pts[FLIP_IDX]  # ok: MLS309
                pts[:, 0] = w - 1 - pts[:, 0]
            if zlib.crc32(path.encode()) % 40 == 0:
                img[-12:, -12:] = 255  # ruleid: MLS309
                pts = self.mean_shape * (w - 1)  # todoruleid: family 6 (missed)
            elif np.random.rand() < 0.3:
                oh, ow = np.random.randint(20, 80, size=2)
                oy, ox = np.random.randint(0, w - oh), np.random.randint(0, w - ow)
                img[oy:oy + oh, ox:ox + ow] = np.random.randint(0, 255, 3)
        img = torch.from_numpy(img).permute(2, 0, 1).float().div_(255.0)
        target = torch.from_numpy(pts / (w - 1)).float()
        return img, target
