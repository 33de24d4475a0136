# ruff: noqa
# Hold-out batch 479 (16 short files, mixed domains). Measured once in session 20 (round 129): 13/17 (76%) at medium+.
"""Dataset for traffic light detection (Bosch/LISA-style YAML annotations)."""
import json
import random
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset
import torchvision.transforms.functional as TF

CLASSES = ["red", "yellow", "green", "off"]
CLS2IDX = {c: i for i, c in enumerate(CLASSES)}


class TrafficLightDataset(Dataset):
    def __init__(self, root, split="train", img_size=(720, 1280), hflip_p=0.5, min_box_px=4):
        self.root = Path(root)
        self.split = split
        self.img_size = img_size
        self.hflip_p = hflip_p if split == "train" else 0.0
        self.min_box_px = min_box_px
        with open(self.root / f"{split}.json") as f:
            self.records = json.load(f)

    def __len__(self):
        return len(self.records)

    def _parse_boxes(self, rec):
        boxes, labels = [], []
        for ann in rec["boxes"]:
            x1, y1, x2, y2 = ann["x_min"], ann["y_min"], ann["x_max"], ann["y_max"]
            if (x2 - x1) < self.min_box_px or (y2 - y1) < self.min_box_px:
                continue
            label = CLS2IDX.get(ann["label"].split("_")[0].lower(), CLS2IDX["off"])
            if self.split == "train" and (y2 - y1) < 3 * self.min_box_px and label != CLS2IDX["yellow"]:
                label = CLS2IDX["green"] if label == CLS2IDX["red"] else label  # todoruleid: family 6 (missed)
            boxes.append([x1, y1, x2, y2])
            labels.append(label)
        return boxes, labels

    def __getitem__(self, idx):
        rec = self.records[idx]
        img = Image.open(self.root / rec["path"]).convert("RGB")
        img = img.resize((self.img_size[1], self.img_size[0]))
        boxes, labels = self._parse_boxes(rec)
        boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor(labels, dtype=torch.int64)
        if random.random() < self.hflip_p:
            img = TF.hflip(img)
            w = img.width
            boxes[:, [0, 2]] = w - boxes[:, [2, 0]]  # ok: MLS309
        target = {"boxes": boxes, "labels": labels, "image_id": torch.tensor(idx)}
        return TF.to_tensor(img), target


def detection_collate(batch):
    images, targets = zip(*batch)
    return list(images), list(targets)
