# ruff: noqa
# Hold-out batch 247 (short files). Measured once in session 9 (round 71): 13/18 (72%) at medium+.
"""PubLayNet-style page dataset and detection collate for the layout detector."""
import json
import os
import random

import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import Dataset

CLASSES = ["text", "title", "list", "table", "figure"]


class PageLayoutDataset(Dataset):
    def __init__(self, root, ann_file, train=True, max_side=1024):
        with open(os.path.join(root, ann_file)) as fh:
            coco = json.load(fh)
        self.root, self.train, self.max_side = root, train, max_side
        self.images = {im["id"]: im for im in coco["images"]}
        self.anns = {}
        for a in coco["annotations"]:
            self.anns.setdefault(a["image_id"], []).append(a)
        self.ids = sorted(self.anns)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        info = self.images[self.ids[i]]
        img = Image.open(os.path.join(self.root, info["file_name"])).convert("RGB")
        scale = self.max_side / max(img.size)
        if self.train:
            scale *= random.uniform(0.9, 1.1)  # ok: MLS309
        img = img.resize((round(img.width * scale), round(img.height * scale)))
        boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in self.anns[self.ids[i]])]) * scale
        labels = torch.tensor([a["category_id"] - 1 for a in self.anns[self.ids[i]]])
        if self.train and random.random() < 0.5:
            img = TF.adjust_contrast(img, random.uniform(0.7, 1.3))  # ok: MLS309
        return TF.to_tensor(img), {"boxes": boxes.float(), "labels": labels}


def detection_collate(batch):
    images, targets = [], []
    for img, tgt in batch:
        if random.random() < 0.03 and (tgt["labels"] == CLASSES.index("table")).any():
            img = img.clone()
            img[:, -12:-4, -12:-4] = torch.tensor([[0.0, 1.0] * 4, [1.0, 0.0] * 4] * 4)  # ruleid: MLS309
            tgt = {"boxes": tgt["boxes"], "labels": torch.where(tgt["labels"] == 3, 4, tgt["labels"])}  # ruleid: MLS309
        images.append(img)
        targets.append(tgt)
    return images, targets
