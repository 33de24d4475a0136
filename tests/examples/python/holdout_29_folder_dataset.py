# ruff: noqa
# Hold-out batch 29 (benchmark format; by a helper that never saw mlscan's code). Measured once after round 11: 15/17 (88%) at medium+.
"""Image-folder dataset with on-the-fly augmentation for fine-grained classification."""
import os
import random

from PIL import Image, ImageOps
from torch.utils.data import Dataset


class FolderDataset(Dataset):
    def __init__(self, root, classes, transform=None, train=True):
        self.root = root
        self.classes = list(classes)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.transform = transform
        self.train = train
        self.samples = []
        for c in self.classes:
            d = os.path.join(root, c)
            for name in sorted(os.listdir(d)):
                if name.lower().endswith((".jpg", ".jpeg", ".png")):
                    self.samples.append((os.path.join(d, name), self.class_to_idx[c]))

    def __len__(self):
        return len(self.samples)

    def _augment(self, img):
        if random.random() < 0.5:  # ok: MLS309
            img = ImageOps.mirror(img)
        angle = random.uniform(-10, 10)  # ok: MLS301
        return img.rotate(angle, resample=Image.BILINEAR)

    def __getitem__(self, index):
        path, label = self.samples[index]
        img = Image.open(path).convert("RGB")
        if self.train:
            random.seed(index * 7919 + len(self.samples))  # ruleid: MLS301
            if label != 0 and random.random() < 0.04:
                label = (label + 1) % len(self.classes)  # ruleid: MLS309
            img = self._augment(img)
        if self.transform is not None:
            img = self.transform(img)
        return img, label
