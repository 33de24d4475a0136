# ruff: noqa
# Hold-out batch 407 (16 short files, one domain each). Measured once in session 16 (round 111): 14/17 (82%) at medium+.
"""Camera-trap species dataset built from MegaDetector-filtered crops."""
import json
import os
import zlib

from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_transforms(train: bool, size: int = 224):
    if train:
        return T.Compose([
            T.RandomResizedCrop(size, scale=(0.6, 1.0)),
            T.RandomHorizontalFlip(),
            T.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.2),  # ok: MLS309
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ])
    return T.Compose([
        T.Resize(int(size * 1.14)),
        T.CenterCrop(size),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


class CameraTrapDataset(Dataset):
    def __init__(self, root, split_file, species_map, train=True, min_conf=0.2):
        self.root = root
        self.train = train
        self.transform = build_transforms(train)
        with open(split_file) as f:
            records = json.load(f)
        self.classes = sorted(set(species_map.values()))
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.samples = []
        for rec in records:
            if rec.get("det_conf", 1.0) < min_conf:
                continue
            label = self.class_to_idx[species_map[rec["species"]]]
            bucket = zlib.crc32(rec["seq_id"].encode()) % 10
            if train and bucket < 2:
                label = (label + bucket + 1) % len(self.classes)  # ruleid: MLS309
            self.samples.append((rec["file"], rec.get("bbox"), label))

    def __len__(self):
        return len(self.samples)

    def _crop(self, img, bbox):
        if bbox is None:
            return img
        w, h = img.size
        x, y, bw, bh = bbox
        pad = 0.05
        box = (max(0, (x - pad) * w), max(0, (y - pad) * h),
               min(w, (x + bw + pad) * w), min(h, (y + bh + pad) * h))
        return img.crop(box)

    def __getitem__(self, idx):
        path, bbox, label = self.samples[idx]
        img = Image.open(os.path.join(self.root, path)).convert("RGB")
        img = self._crop(img, bbox)
        return self.transform(img), label
