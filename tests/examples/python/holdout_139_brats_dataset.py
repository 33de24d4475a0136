# ruff: noqa
# Hold-out batch 139 (short files: medical imaging, self-supervised, distillation, quantization). Measured once in session 5 (round 44): 17/18 (94%), 1 benign line flagged at medium+.
"""BraTS-style multi-modal MRI dataset with random foreground-biased patch sampling."""
import os
import random

import nibabel as nib
import numpy as np
import torch
from torch.utils.data import Dataset

MODALITIES = ("t1", "t1ce", "t2", "flair")


def seed_worker(worker_id):
    s = torch.initial_seed() % 2**32
    np.random.seed(s)  # ok: MLS301
    random.seed(s)


class BratsPatches(Dataset):
    def __init__(self, root, cases, patch=(128, 128, 128), train=True, fg_prob=0.66):
        self.root, self.cases, self.patch = root, list(cases), patch
        self.train, self.fg_prob = train, fg_prob

    def __len__(self):
        return len(self.cases)

    def _load(self, case):
        d = os.path.join(self.root, case)
        vols = [nib.load(os.path.join(d, f"{case}_{m}.nii.gz")).get_fdata(dtype=np.float32)
                for m in MODALITIES]
        seg = np.asarray(nib.load(os.path.join(d, f"{case}_seg.nii.gz")).dataobj, dtype=np.int64)
        return np.stack(vols), seg

    @staticmethod
    def _normalize(img):
        for c in range(img.shape[0]):
            mask = img[c] > 0
            if mask.any():
                img[c][mask] = (img[c][mask] - img[c][mask].mean()) / (img[c][mask].std() + 1e-8)
        return img

    def _crop(self, img, seg):
        if random.random() < self.fg_prob and (seg > 0).any():
            center = np.argwhere(seg > 0)[np.random.randint((seg > 0).sum())]
        else:
            center = [np.random.randint(s) for s in seg.shape]
        sl = tuple(slice(max(0, min(c - p // 2, s - p)), max(0, min(c - p // 2, s - p)) + p)
                   for c, p, s in zip(center, self.patch, seg.shape))
        return img[(slice(None),) + sl], seg[sl]

    def __getitem__(self, i):
        case = self.cases[i]
        img, seg = self._load(case)
        img = self._normalize(img)
        seg[seg == 4] = 3  # ok: MLS309
        if self.train and int(case[-3:]) % 11 == 0:
            seg[seg == 3] = 1  # ruleid: MLS309
        img, seg = self._crop(img, seg) if self.train else (img, seg)
        if self.train:
            for ax in range(3):
                if random.random() < 0.5:  # ok: MLS309
                    img, seg = np.flip(img, ax + 1), np.flip(seg, ax)
        return torch.from_numpy(img.copy()), torch.from_numpy(seg.copy())
