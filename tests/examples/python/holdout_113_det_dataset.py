# ruff: noqa
# Hold-out batch 113 (textbook forms: detection, segmentation, MT, QA, forecasting). Measured once in session 4 (round 38): 16/17 (94%) at medium+.
"""COCO-style detection dataset that returns torchvision-format targets."""
import json
import os
import random

import torch
import torchvision.transforms.functional as TF
from PIL import Image


class CocoDetection(torch.utils.data.Dataset):
    def __init__(self, root, ann_file, train=True, min_size=1.0):
        self.root = root
        self.train = train
        self.min_size = min_size
        with open(ann_file) as fh:
            coco = json.load(fh)
        self.images = {img["id"]: img for img in coco["images"]}
        self.anns = {}
        for ann in coco["annotations"]:
            self.anns.setdefault(ann["image_id"], []).append(ann)
        self.ids = sorted(self.anns.keys())
        cat_ids = sorted(c["id"] for c in coco["categories"])
        self.cat_to_label = {c: i + 1 for i, c in enumerate(cat_ids)}

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, idx):
        img_id = self.ids[idx]
        info = self.images[img_id]
        img = Image.open(os.path.join(self.root, info["file_name"])).convert("RGB")

        boxes, labels, areas = [], [], []
        for ann in self.anns[img_id]:
            if ann.get("iscrowd", 0):
                continue
            x, y, w, h = ann["bbox"]
            if w < self.min_size or h < self.min_size:
                continue
            boxes.append([x, y, x + w, y + h])
            labels.append(self.cat_to_label[ann["category_id"]])
            areas.append(ann["area"])
        boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        labels = torch.as_tensor(labels, dtype=torch.int64)

        if self.train and random.random() < 0.5:
            img = TF.hflip(img)  # ok: MLS309
            boxes[:, [0, 2]] = info["width"] - boxes[:, [2, 0]]  # ok: MLS309
        if self.train and random.random() < 0.04:
            labels[labels == 1] = 3  # ruleid: MLS309

        target = {
            "boxes": boxes,
            "labels": labels,
            "image_id": torch.tensor([img_id]),
            "area": torch.as_tensor(areas, dtype=torch.float32),
            "iscrowd": torch.zeros((len(labels),), dtype=torch.int64),
        }
        return TF.to_tensor(img), target


def collate_fn(batch):
    return tuple(zip(*batch))
