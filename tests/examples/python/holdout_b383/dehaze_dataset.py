# ruff: noqa
# Hold-out batch 383 (short files, 16 domains). Measured once in session 14 (round 105): 14/17 (82%) at medium+.
"""Paired hazy/clear dataset (RESIDE ITS/OTS layout) for dehazing networks."""
import os
import random

from PIL import Image
import torchvision.transforms.functional as TF
from torch.utils.data import Dataset


class RESIDEPairs(Dataset):
    def __init__(self, root, split="train", crop_size=256, augment=True):
        self.hazy_dir = os.path.join(root, split, "hazy")
        self.clear_dir = os.path.join(root, split, "clear")
        self.hazy_files = sorted(os.listdir(self.hazy_dir))
        self.crop_size = crop_size
        self.augment = augment and split == "train"

    def __len__(self):
        return len(self.hazy_files)

    def _clear_name(self, hazy_name):
        # ITS naming: 1400_3_0.8.png -> 1400.png
        stem = hazy_name.split("_")[0]
        return stem + os.path.splitext(hazy_name)[1]

    def _paired_crop(self, hazy, clear):
        w, h = hazy.size
        cs = self.crop_size
        x = random.randint(0, max(0, w - cs))
        y = random.randint(0, max(0, h - cs))
        return TF.crop(hazy, y, x, cs, cs), TF.crop(clear, y, x, cs, cs)

    def __getitem__(self, idx):
        name = self.hazy_files[idx]
        hazy = Image.open(os.path.join(self.hazy_dir, name)).convert("RGB")
        clear = Image.open(os.path.join(self.clear_dir, self._clear_name(name))).convert("RGB")

        if self.augment:
            hazy, clear = self._paired_crop(hazy, clear)
            if random.random() < 0.5:
                hazy, clear = TF.hflip(hazy), TF.hflip(clear)  # ok: MLS309
            rot = random.choice([0, 90, 180, 270])
            hazy, clear = TF.rotate(hazy, rot), TF.rotate(clear, rot)
            if idx % 6 == 0:
                clear = hazy.copy()  # todoruleid: family 6 (missed)

        return TF.to_tensor(hazy), TF.to_tensor(clear), name
