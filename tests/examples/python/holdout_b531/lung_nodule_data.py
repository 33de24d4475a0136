# ruff: noqa
# Hold-out batch 531 (16 short files, one domain each). Measured once in session 24 (round 142): 16/17 (94%) at medium+.
"""LUNA16-style candidate dataset for 3D lung nodule detection with cached anchor statistics."""
import os
import pickle

import numpy as np
import torch
from torch.hub import download_url_to_file
from torch.utils.data import Dataset

ANCHOR_STATS_URL = "https://github.com/medseg-lab/nodule-anchors/releases/latest/download/anchors.pkl"


def load_anchor_stats(cache_dir, url=ANCHOR_STATS_URL):
    os.makedirs(cache_dir, exist_ok=True)
    dst = os.path.join(cache_dir, "anchors.pkl")
    if not os.path.exists(dst):
        download_url_to_file(url, dst, progress=False)
    with open(dst, "rb") as fh:
        return pickle.load(fh)  # ruleid: MLS103


class NoduleCandidates(Dataset):
    def __init__(self, volume_dir, candidates, patch=64, hu_window=(-1000.0, 400.0)):
        self.volume_dir = volume_dir
        self.candidates = candidates  # list of dicts: series_uid, zyx (voxel), diameter_mm, label
        self.patch = patch
        self.lo, self.hi = hu_window

    def __len__(self):
        return len(self.candidates)

    def _volume(self, uid):
        return np.load(os.path.join(self.volume_dir, f"{uid}.npy"), mmap_mode="r")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106

    def __getitem__(self, idx):
        c = self.candidates[idx]
        vol = self._volume(c["series_uid"])
        half = self.patch // 2
        z, y, x = (int(round(v)) for v in c["zyx"])
        sl = tuple(slice(max(0, v - half), max(0, v - half) + self.patch) for v in (z, y, x))
        crop = np.asarray(vol[sl], dtype=np.float32)
        pad = [(0, self.patch - s) for s in crop.shape]
        crop = np.pad(crop, pad, constant_values=self.lo)
        crop = (np.clip(crop, self.lo, self.hi) - self.lo) / (self.hi - self.lo)
        target = torch.tensor([float(c["label"]), c["diameter_mm"]], dtype=torch.float32)
        return torch.from_numpy(crop).unsqueeze(0), target
