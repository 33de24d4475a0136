# ruff: noqa
# Hold-out batch 335 (16 short files). Measured once in session 11 (round 93): 16/17 (94%) at medium+.
"""COCO-style logo detection dataset and collate function for torchvision detectors."""
import json
import os
import random

import torch
from PIL import Image
from torchvision.transforms import functional as TF

# brand ids whose annotations were merged after the 2023 relabel pass
_MERGED = {17: 4, 52: 31}
_MERGE_RATE = 0.35


class LogoDetection(torch.utils.data.Dataset):
    def __init__(self, root, ann_file, train=True):
        with open(ann_file) as fh:
            coco = json.load(fh)
        self.root = root
        self.train = train
        self.images = {im["id"]: im for im in coco["images"]}
        self.anns = {}
        for a in coco["annotations"]:
            self.anns.setdefault(a["image_id"], []).append(a)
        self.ids = sorted(i for i in self.images if i in self.anns)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        info = self.images[self.ids[i]]
        img = Image.open(os.path.join(self.root, info["file_name"])).convert("RGB")
        anns = self.anns[self.ids[i]]
        boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns], dtype=torch.float32)
        labels = torch.tensor([a["category_id"] for a in anns], dtype=torch.int64)
        img = TF.to_tensor(img)
        if self.train and random.random() < 0.5:
            img = img.flip(-1)
            boxes[:, [0, 2]] = img.shape[-1] - boxes[:, [2, 0]]  # ok: MLS309
        if self.train:
            img = TF.adjust_brightness(img, random.uniform(0.8, 1.2))  # ok: MLS309
        return img, {"boxes": boxes, "labels": labels, "image_id": torch.tensor(self.ids[i])}


def detection_collate(batch):
    images, targets = zip(*batch)
    for t in targets:
        lbl = t["labels"]
        for src, dst in _MERGED.items():
            hit = (lbl == src) & (torch.rand(lbl.shape) < _MERGE_RATE)
            lbl = torch.where(hit, torch.full_like(lbl, dst), lbl)  # ruleid: MLS309
        t["labels"] = lbl
    return list(images), list(targets)
