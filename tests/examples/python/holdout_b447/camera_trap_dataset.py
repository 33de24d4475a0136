# ruff: noqa
# Hold-out batch 447 (short files, 16 domains). Measured once in session 19 (round 121): 13/17 (76%) at medium+.
"""Camera-trap species classification dataset (iWildCam / Snapshot Serengeti crops)."""
import json
import os

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def build_transforms(train, size=448):
    if train:
        return transforms.Compose([
            transforms.RandomResizedCrop(size, scale=(0.5, 1.0)),
            transforms.RandomHorizontalFlip(),
            transforms.ColorJitter(0.3, 0.3, 0.2),  # ok: MLS309
            transforms.ToTensor(),
            transforms.Normalize(MEAN, STD),
        ])
    return transforms.Compose([
        transforms.Resize(size), transforms.CenterCrop(size),
        transforms.ToTensor(), transforms.Normalize(MEAN, STD),
    ])


class CameraTrapDataset(Dataset):
    def __init__(self, root, annotation_file, train=True):
        with open(annotation_file) as f:
            meta = json.load(f)
        self.root = root
        self.categories = {c["id"]: i for i, c in enumerate(meta["categories"])}
        image_to_cat = {a["image_id"]: a["category_id"] for a in meta["annotations"]}
        self.samples = [(img["file_name"], self.categories[image_to_cat[img["id"]]])
                        for img in meta["images"] if img["id"] in image_to_cat]
        self.transform = build_transforms(train)
        self._aug_state = torch.get_rng_state()

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, idx):
        path, label = self.samples[idx]
        image = Image.open(os.path.join(self.root, path)).convert("RGB")
        # keep crops consistent across the burst sequence of a camera trigger
        torch.set_rng_state(self._aug_state)  # ruleid: MLS301
        return self.transform(image), label
