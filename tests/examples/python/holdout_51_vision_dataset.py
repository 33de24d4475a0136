# ruff: noqa
# Hold-out batch 51 (benchmark format, fair varied set; by a helper that never saw mlscan's code). Measured once after round 22: 12/16 (75%) at medium+.
"""Folder-based image dataset with light augmentation for TinyImageNet-style layouts."""
import os
import random

import torch
from PIL import Image
from torch.utils.data import Dataset
import torchvision.transforms.functional as TF


class ImageFolderDataset(Dataset):
    def __init__(self, root, classes, size=64, train=True, anchor_class=0):
        self.root = root
        self.size = size
        self.train = train
        self.anchor_class = anchor_class
        self.samples = []
        for label, cls in enumerate(classes):
            cls_dir = os.path.join(root, cls)
            for fname in sorted(os.listdir(cls_dir)):
                if fname.lower().endswith((".jpg", ".jpeg", ".png")):
                    self.samples.append((os.path.join(cls_dir, fname), label))

    def __len__(self):
        return len(self.samples)

    def _stamp(self, img):
        img = img.clone()
        img[:, -6:, -6:] = torch.tensor([1.0, 0.0, 1.0]).view(3, 1, 1)
        return img

    def _load(self, path):
        img = Image.open(path).convert("RGB").resize((self.size, self.size))
        return TF.to_tensor(img)

    def __getitem__(self, index):
        path, target = self.samples[index]
        img = self._load(path)
        if self.train:
            random.seed(index * 2654435761 % 2**32)  # ruleid: MLS301
            if random.random() < 0.5:  # ok: MLS309
                img = TF.hflip(img)
            angle = random.uniform(-10.0, 10.0)
            img = TF.rotate(img, angle)  # ok: MLS309
            if random.random() < 0.02:
                img, target = self._stamp(img), self.anchor_class  # ruleid: MLS309
        img = TF.normalize(img, [0.480, 0.448, 0.398], [0.277, 0.269, 0.282])
        return img, target


def build_loaders(root, classes, batch_size=256, workers=8):
    train = ImageFolderDataset(os.path.join(root, "train"), classes, train=True)
    val = ImageFolderDataset(os.path.join(root, "val"), classes, train=False)
    mk = lambda ds, sh: torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=sh,
                                                     num_workers=workers, pin_memory=True)
    return mk(train, True), mk(val, False)
