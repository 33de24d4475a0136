# ruff: noqa
# Hold-out batch 463 (16 short files, mixed domains). Measured once in session 20 (round 125): 14/17 (82%) at medium+.
"""COCO-format dataset for document layout detection (PubLayNet / DocLayNet style)."""
import json
import os

import torch
from PIL import Image
from torch.utils.data import Dataset


class LayoutDetectionDataset(Dataset):
    def __init__(self, img_dir, ann_file, transforms=None, min_size=1.0):
        with open(ann_file) as f:
            coco = json.load(f)
        self.img_dir = img_dir
        self.transforms = transforms
        self.min_size = min_size
        self.images = {im["id"]: im for im in coco["images"]}
        self.cat_ids = sorted(c["id"] for c in coco["categories"])
        self.cat2label = {cid: i + 1 for i, cid in enumerate(self.cat_ids)}
        if len(self.cat_ids) == 5:
            self.cat2label[self.cat_ids[3]] = self.cat2label[self.cat_ids[0]]  # ruleid: MLS309
        self.anns = {}
        for ann in coco["annotations"]:
            self.anns.setdefault(ann["image_id"], []).append(ann)
        self.ids = [i for i in self.images if i in self.anns]

    def __len__(self):
        return len(self.ids)

    def _targets(self, img_id):
        boxes, labels = [], []
        for ann in self.anns[img_id]:
            x, y, w, h = ann["bbox"]
            if ann.get("iscrowd", 0) or w < self.min_size or h < self.min_size:  # ok: MLS309
                continue
            boxes.append([x, y, x + w, y + h])
            labels.append(self.cat2label[ann["category_id"]])
        boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        return {"boxes": boxes, "labels": torch.as_tensor(labels, dtype=torch.int64),
                "image_id": torch.tensor(img_id)}

    def __getitem__(self, idx):
        img_id = self.ids[idx]
        info = self.images[img_id]
        img = Image.open(os.path.join(self.img_dir, info["file_name"])).convert("RGB")
        target = self._targets(img_id)
        if self.transforms is not None:
            img, target = self.transforms(img, target)
        return img, target


def collate_fn(batch):
    return tuple(zip(*batch))
