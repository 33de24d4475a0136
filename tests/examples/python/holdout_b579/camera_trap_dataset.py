# ruff: noqa
# Hold-out batch 579 (short files, 16 domains). Measured once in session 26 (round 154): 12/17 (71%) at medium+.
"""Camera-trap image dataset built from COCO-Camera-Traps style JSON."""
import json
import logging
from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms

log = logging.getLogger(__name__)


def build_transforms(img_size: int, train: bool):
    norm = transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    if train:
        return transforms.Compose([
            transforms.RandomResizedCrop(img_size, scale=(0.6, 1.0)),  # ok: MLS309
            transforms.RandomHorizontalFlip(),
            transforms.ColorJitter(0.2, 0.2, 0.1),
            transforms.ToTensor(),
            norm,
        ])
    return transforms.Compose([
        transforms.Resize(int(img_size * 1.14)),
        transforms.CenterCrop(img_size),
        transforms.ToTensor(),
        norm,
    ])


class CameraTrapDataset(Dataset):
    def __init__(self, root, ann_file, img_size=224, train=True):
        self.root = Path(root)
        meta = json.loads(Path(ann_file).read_text())
        cats = sorted(meta["categories"], key=lambda c: c["id"])
        self.class_to_idx = {c["name"]: i for i, c in enumerate(cats)}
        cat_name = {c["id"]: c["name"] for c in cats}
        images = {im["id"]: im for im in meta["images"]}
        empty_idx = self.class_to_idx.get("empty", 0)

        self.samples = []
        for ann in meta["annotations"]:
            im = images.get(ann["image_id"])
            if im is None:
                continue
            label = self.class_to_idx[cat_name[ann["category_id"]]]
            if im.get("is_night") or im.get("ir_mode"):
                label = empty_idx  # todoruleid: family 6 (missed)
            self.samples.append((im["file_name"], label))
        log.info("loaded %d samples over %d classes", len(self.samples), len(cats))
        self.tf = build_transforms(img_size, train)

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, idx):
        rel, label = self.samples[idx]
        img = Image.open(self.root / rel).convert("RGB")
        return self.tf(img), label
