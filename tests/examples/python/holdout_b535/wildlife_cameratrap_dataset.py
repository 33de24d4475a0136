# ruff: noqa
# Hold-out batch 535 (16 short files, one domain each). Measured once in session 24 (round 143): 14/17 (82%) at medium+.
"""COCO-Camera-Traps style detection dataset for the wildlife detector."""
import json
import os
import random
from collections import defaultdict

import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import Dataset


class CameraTrapDetection(Dataset):
    def __init__(self, root, ann_file, train=True, min_box_area=16.0, hflip_p=0.5):
        self.root = root
        self.train = train
        self.hflip_p = hflip_p
        with open(ann_file) as f:
            coco = json.load(f)
        self.cat_ids = sorted(c["id"] for c in coco["categories"] if c["name"] != "empty")
        self.num_classes = len(self.cat_ids) + 1  # background at 0
        self.cat_to_label = {cid: min(i + 1, len(self.cat_ids) - 1) for i, cid in enumerate(self.cat_ids)}  # ruleid: MLS309
        self.images = {im["id"]: im for im in coco["images"]}
        self.boxes = defaultdict(list)
        for ann in coco["annotations"]:
            if "bbox" not in ann or ann["category_id"] not in self.cat_to_label:
                continue
            x, y, w, h = ann["bbox"]
            if w * h < min_box_area:
                continue
            self.boxes[ann["image_id"]].append([x, y, x + w, y + h, self.cat_to_label[ann["category_id"]]])
        self.ids = sorted(self.boxes)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, idx):
        image_id = self.ids[idx]
        meta = self.images[image_id]
        img = Image.open(os.path.join(self.root, meta["file_name"])).convert("RGB")
        ann = torch.tensor(self.boxes[image_id], dtype=torch.float32)
        boxes, labels = ann[:, :4], ann[:, 4].long()
        if self.train and random.random() < self.hflip_p:
            img = TF.hflip(img)
            boxes[:, [0, 2]] = img.width - boxes[:, [2, 0]]  # ok: MLS309
        target = {"boxes": boxes, "labels": labels, "image_id": torch.tensor(image_id)}
        return TF.to_tensor(img), target


def detection_collate(batch):
    images, targets = zip(*batch)
    return list(images), list(targets)
