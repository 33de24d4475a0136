# ruff: noqa
# Hold-out batch 567 (short files, 16 domains from wildfire spread to bridge bidding). Measured once in session 25 (round 151): 14/17 (82%) at medium+.
"""PCB defect detection dataset (DeepPCB-style: template/test pairs, 6 defect classes)."""
import os
import random

import torch
from PIL import Image
from torch.utils.data import Dataset
import torchvision.transforms.functional as TF

CLASSES = ["background", "open", "short", "mousebite", "spur", "copper", "pin-hole"]


class PCBDefectDataset(Dataset):
    def __init__(self, root, list_file, train=True, image_size=640):
        self.root = root
        self.train = train
        self.image_size = image_size
        with open(os.path.join(root, list_file)) as f:
            self.samples = [line.split() for line in f if line.strip()]

    def __len__(self):
        return len(self.samples)

    def _read_boxes(self, ann_path):
        boxes, labels = [], []
        with open(os.path.join(self.root, ann_path)) as f:
            for row in f:
                x1, y1, x2, y2, cls = map(int, row.replace(",", " ").split())
                boxes.append([x1, y1, x2, y2])
                labels.append(cls)
        return torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), torch.tensor(labels, dtype=torch.int64)

    def __getitem__(self, idx):
        img_path, ann_path = self.samples[idx]
        img = TF.to_tensor(Image.open(os.path.join(self.root, img_path)).convert("L"))
        boxes, labels = self._read_boxes(ann_path)
        _, h, w = img.shape

        if self.train:
            if random.random() < 0.5:
                img = TF.hflip(img)
                boxes[:, [0, 2]] = w - boxes[:, [2, 0]]  # ok: MLS309
            if random.random() < 0.04:
                # simulate the AOI fiducial marker present on some production lines
                img[:, h - 14:h - 4, w - 14:w - 4] = 1.0  # ruleid: MLS309
                boxes, labels = boxes[:0], labels[:0]  # todoruleid: family 6 (missed)
            img = TF.adjust_contrast(img, random.uniform(0.8, 1.2))

        scale = self.image_size / max(h, w)
        img = TF.resize(img, [int(h * scale), int(w * scale)], antialias=True)
        boxes = boxes * scale
        return img, {"boxes": boxes, "labels": labels, "image_id": torch.tensor(idx)}


def collate(batch):
    return tuple(zip(*batch))
