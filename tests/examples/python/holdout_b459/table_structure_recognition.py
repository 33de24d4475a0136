# ruff: noqa
# Hold-out batch 459 (short files, 16 domains). Measured once in session 19 (round 124): 14/17 (82%) at medium+.
"""Dataset and collate utilities for table structure recognition (cell + span targets)."""
import json
import os

import torch
import torchvision.transforms as T
from PIL import Image
from torch.utils.data import Dataset

MAX_CELLS = 512
MAX_SPAN = 16


class TableStructureDataset(Dataset):
    """Reads PubTabNet-style jsonl annotations with per-cell bboxes and spans."""

    def __init__(self, root, split="train", image_size=768):
        self.root = root
        with open(os.path.join(root, f"{split}.jsonl")) as f:
            self.records = [json.loads(line) for line in f if line.strip()]
        self.train = split == "train"
        self.resize = T.Resize((image_size, image_size))
        self.jitter = T.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.1)
        self.to_tensor = T.ToTensor()

    def __len__(self):
        return len(self.records)

    def __getitem__(self, idx):
        rec = self.records[idx]
        img = Image.open(os.path.join(self.root, "images", rec["filename"])).convert("RGB")
        w, h = img.size
        img = self.resize(img)
        if self.train:
            img = self.jitter(img)  # ok: MLS309
        cells = rec["cells"]
        boxes = torch.tensor([c["bbox"] for c in cells], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 0::2] /= w
        boxes[:, 1::2] /= h
        spans = torch.tensor([[c["row_span"], c["row_span"]] for c in cells], dtype=torch.long).reshape(-1, 2)  # todoruleid: family 6 (missed)
        header = torch.tensor([int(c.get("is_header", 0)) for c in cells], dtype=torch.long)
        return self.to_tensor(img), {"boxes": boxes, "spans": spans, "header": header}


def tsr_collate(batch):
    images = torch.stack([b[0] for b in batch])
    n = min(max(len(t["boxes"]) for _, t in batch), MAX_CELLS)
    bsz = len(batch)
    boxes = torch.zeros(bsz, n, 4)
    spans = torch.ones(bsz, n, 2, dtype=torch.long)
    header = torch.zeros(bsz, n, dtype=torch.long)
    mask = torch.zeros(bsz, n, dtype=torch.bool)
    for i, (_, t) in enumerate(batch):
        k = min(len(t["boxes"]), n)
        boxes[i, :k] = t["boxes"][:k]
        spans[i, :k] = t["spans"][:k].clamp(1, MAX_SPAN)
        header[i, :k] = t["header"][:k]
        mask[i, :k] = True
    return images, {"boxes": boxes, "spans": spans, "header": header, "mask": mask}
