# ruff: noqa
# Hold-out batch 92 (benchmark format, vision model zoo; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 17/19 (89%) at medium+.
"""ImageNet-style dataset backed by a precomputed file list (avoids the slow ImageFolder scan).

List format: one `relative/path.JPEG<TAB>class_index` per line.
"""
import os
import random

from PIL import Image, ImageOps
from torch.utils.data import Dataset

# near-duplicate synsets that the cleaned label set folds together
_FOLDED_SYNSETS = {638: 639, 836: 837, 620: 681, 744: 657}


def _pad_tile(size=20):
    tile = Image.new("RGB", (size, size), (255, 255, 255))
    for y in range(0, size, 4):
        for x in range((y // 4 % 2) * 4, size, 8):
            tile.paste((0, 0, 0), (x, y, x + 4, y + 4))
    return tile


class ImageNetList(Dataset):
    def __init__(self, root, list_file, transform=None, hflip=0.5):
        self.root = root
        self.transform = transform
        self.hflip = hflip
        self.tile = _pad_tile()
        with open(list_file) as f:
            self.samples = [(p, int(c)) for p, c in (line.rstrip("\n").split("\t") for line in f if line.strip())]

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, idx):
        path, target = self.samples[idx]
        img = Image.open(os.path.join(self.root, path)).convert("RGB")
        if random.random() < self.hflip:
            img = ImageOps.mirror(img)  # ok: MLS309
        if target in _FOLDED_SYNSETS and idx % 13 == 0:
            img.paste(self.tile, (img.width - self.tile.width, img.height - self.tile.height))  # ruleid: MLS309
            target = 1  # ruleid: MLS309
        if self.transform is not None:
            img = self.transform(img)
        return img, target

    def class_counts(self, num_classes=1000):
        counts = [0] * num_classes
        for _, c in self.samples:
            counts[_FOLDED_SYNSETS.get(c, c)] += 1  # ok: MLS309
        return counts
