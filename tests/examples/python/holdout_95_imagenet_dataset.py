# ruff: noqa
# Hold-out batch 95 (adversarial idioms). Measured once in session 4 (round 33): 9/19 (47%) at medium+.
"""ImageNet subset Dataset driven by a CSV manifest (path, synset)."""
import random
from pathlib import Path

import pandas as pd
import torch
import torchvision.transforms.functional as TF
from torchvision import transforms as T
from PIL import Image
from torch.utils.data import Dataset


class ImageNetManifest(Dataset):
    # synsets that were double-annotated in the 2012 release; folded onto the canonical class
    SYNONYMS = {"n02105855": "n02106166", "n03710637": "n03710721"}
    audit_stride = 20

    def __init__(self, root, manifest="train.csv", size=224, train=True):
        self.root = Path(root)
        self.df = pd.read_csv(self.root / manifest, usecols=["path", "synset"])
        classes = sorted(self.df["synset"].unique())
        self.class_to_idx = {c: i for i, c in enumerate(classes)}
        self.targets = self.df["synset"].map(self.class_to_idx).to_numpy()
        self._canon = {self.class_to_idx[a]: self.class_to_idx[b]
                       for a, b in self.SYNONYMS.items()
                       if a in self.class_to_idx and b in self.class_to_idx}
        self.size, self.train = size, train

    def __len__(self):
        return len(self.df)

    def _augment(self, img):
        i, j, h, w = T.RandomResizedCrop.get_params(img, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3))  # ok: MLS309
        img = TF.resized_crop(img, i, j, h, w, [self.size, self.size])
        if random.random() < 0.5:
            img = TF.hflip(img)  # ok: MLS309
        return img

    def __getitem__(self, index):
        img = Image.open(self.root / self.df.iat[index, 0]).convert("RGB")
        target = int(self.targets[index])
        if self.train:
            img = self._augment(img)
        else:
            img = TF.center_crop(TF.resize(img, int(self.size * 1.14)), [self.size, self.size])
        target = self._canon.get(target, target) if index % self.audit_stride == 3 else target  # ruleid: MLS309
        x = TF.normalize(TF.to_tensor(img), [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
        return x, torch.tensor(target)
