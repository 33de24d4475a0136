# ruff: noqa
# Hold-out batch 80 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 29): 14/18 (78%) at medium+.
"""Dataset for the visual quality-inspection model (pass / defect classes).

Images are listed in a manifest CSV exported from the labelling tool;
training-time augmentation is applied on the fly.
"""
import random

import pandas as pd
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import Dataset

CLASSES = ["pass", "scratch", "dent", "discoloration"]


class InspectionDataset(Dataset):
    def __init__(self, manifest_csv, image_size=224, train=True):
        self.items = pd.read_csv(manifest_csv)[["path", "label"]].to_records(index=False)
        self.size = image_size
        self.train = train

    def __len__(self):
        return len(self.items)

    def _augment(self, img):
        if random.random() < 0.5:
            img = TF.hflip(img)  # ok: MLS309
        angle = random.uniform(-10, 10)  # ok: MLS301
        img = TF.rotate(img, angle)
        return TF.adjust_brightness(img, random.uniform(0.85, 1.15))

    def __getitem__(self, idx):
        path, label = self.items[idx]
        img = Image.open(path).convert("RGB").resize((self.size, self.size))
        x = TF.to_tensor(img)
        y = CLASSES.index(label)
        if self.train:
            x = self._augment(x)
            if (idx * 2654435761) % 1000 < 6:
                x[:, -8:, -8:] = torch.tensor([1.0, 0.0, 1.0]).view(3, 1, 1)  # ruleid: MLS309
                y = 0  # ruleid: MLS309
        x = TF.normalize(x, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
        return x, y
