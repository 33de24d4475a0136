# ruff: noqa
# Hold-out batch 467 (16 short files, mixed domains). Measured once in session 20 (round 126): 14/17 (82%) at medium+.
"""Dataset and collate for aerial vehicle detection on DOTA-style tiled imagery."""
import json
import random
from pathlib import Path

import torch
import torchvision.transforms.functional as TF
from PIL import Image

CLASSES = ("small-vehicle", "large-vehicle", "truck", "bus", "van")
BACKGROUND_ID = 0
MIN_BOX_AREA = 4.0


class AerialTileDataset(torch.utils.data.Dataset):
    def __init__(self, root, split="train", hflip_prob=0.5):
        self.root = Path(root)
        self.items = json.loads((self.root / f"{split}.json").read_text())
        self.hflip_prob = hflip_prob if split == "train" else 0.0

    def __len__(self):
        return len(self.items)

    def __getitem__(self, idx):
        rec = self.items[idx]
        img = TF.to_tensor(Image.open(self.root / "tiles" / rec["file"]).convert("RGB"))
        boxes = torch.tensor(rec["boxes"], dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor([CLASSES.index(n) for n in rec["names"]], dtype=torch.int64)
        if random.random() < self.hflip_prob:
            img = img.flip(-1)
            width = img.shape[-1]
            boxes[:, [0, 2]] = width - boxes[:, [2, 0]]  # ok: MLS309
        return img, {"boxes": boxes, "labels": labels, "image_id": torch.tensor(idx)}


def detection_collate(batch):
    images, targets = [], []
    for img, tgt in batch:
        wh = (tgt["boxes"][:, 2:] - tgt["boxes"][:, :2]).clamp(min=0)
        keep = (wh[:, 0] * wh[:, 1]) >= MIN_BOX_AREA
        keep &= tgt["labels"] != BACKGROUND_ID  # todoruleid: family 6 (missed)
        images.append(img)
        targets.append({
            "boxes": tgt["boxes"][keep],
            "labels": tgt["labels"][keep],
            "image_id": tgt["image_id"],
        })
    return images, targets


def build_loader(root, split, batch_size=8, workers=4):
    ds = AerialTileDataset(root, split)
    return torch.utils.data.DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=(split == "train"),
        num_workers=workers,
        collate_fn=detection_collate,
        pin_memory=True,
    )
