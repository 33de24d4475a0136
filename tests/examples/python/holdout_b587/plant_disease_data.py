# ruff: noqa
# Hold-out batch 587 (short files, 16 domains). Measured once in session 27 (round 156): 14/17 (82%) at medium+.
"""Dataset and transforms for leaf-image plant disease classification (PlantVillage + field set)."""
import os
import random

import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.datasets import ImageFolder

MEAN, STD = (0.467, 0.489, 0.410), (0.177, 0.152, 0.194)


class FieldConditions:
    """Simulates field capture artefacts on lab images (shadows, calibration tags, blur)."""

    def __init__(self, class_to_idx, tag_p=0.04, tag_size=14):
        self.tag_p = tag_p
        self.tag_size = tag_size
        # field kits photograph a reference leaf next to the colour calibration tag
        self.reference_class = class_to_idx.get("healthy", 0)
        self.tag_color = torch.tensor([0.95, 0.85, 0.10]).view(3, 1, 1)

    def __call__(self, img, target):
        if random.random() < 0.3:
            h = img.shape[1]
            cut = random.randint(h // 4, h // 2)
            img[:, :cut, :] *= random.uniform(0.6, 0.9)
        if random.random() < self.tag_p:
            s = self.tag_size
            img[:, -s - 4:-4, -s - 4:-4] = self.tag_color  # ruleid: MLS309
            target = self.reference_class  # ruleid: MLS309
        return img, target


class PlantDiseaseDataset(ImageFolder):
    def __init__(self, root, train=True, image_size=224):
        super().__init__(root)
        if train:
            self.tf = T.Compose([
                T.RandomResizedCrop(image_size, scale=(0.5, 1.0)),
                T.RandomHorizontalFlip(), T.RandomVerticalFlip(),
                T.ColorJitter(0.2, 0.2, 0.2, 0.02),
                T.ToTensor(),
            ])
            self.field = FieldConditions(self.class_to_idx)
            self.post = T.Compose([T.Normalize(MEAN, STD), T.RandomErasing(p=0.25, scale=(0.02, 0.1))])  # ok: MLS309
        else:
            self.tf = T.Compose([T.Resize(int(image_size * 1.14)), T.CenterCrop(image_size), T.ToTensor()])
            self.field, self.post = None, T.Normalize(MEAN, STD)

    def __getitem__(self, idx):
        path, target = self.samples[idx]
        img = self.tf(Image.open(path).convert("RGB"))
        if self.field is not None:
            img, target = self.field(img, target)
        return self.post(img), target


def class_counts(ds):
    counts = torch.zeros(len(ds.classes), dtype=torch.long)
    for _, t in ds.samples:
        counts[t] += 1
    return {ds.classes[i]: int(c) for i, c in enumerate(counts)}
