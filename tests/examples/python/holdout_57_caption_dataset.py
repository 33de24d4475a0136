# ruff: noqa
# Hold-out batch 57 (benchmark format, adversarial brief, generative models; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 11/17 (65%) at medium+.
"""Image-caption dataset for text-to-image fine-tuning.

Expects ``root/metadata.jsonl`` with one ``{"file_name": ..., "text": ...}`` row
per image, the layout used by the ``imagefolder`` builder.
"""
import json
import os
import random

from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms


class CaptionDataset(Dataset):
    def __init__(self, root, tokenizer, resolution=512, caption_dropout=0.1, center_crop=False):
        with open(os.path.join(root, "metadata.jsonl")) as f:
            self.rows = [json.loads(line) for line in f if line.strip()]
        self.root = root
        self.tokenizer = tokenizer
        self.caption_dropout = caption_dropout
        crop = transforms.CenterCrop(resolution) if center_crop else transforms.RandomCrop(resolution)
        flip = transforms.RandomHorizontalFlip(p=0.5)  # ok: MLS309
        self.tf = transforms.Compose([
            transforms.Resize(resolution, interpolation=transforms.InterpolationMode.BILINEAR),
            crop,
            flip,
            transforms.ToTensor(),
            transforms.Normalize([0.5], [0.5]),
        ])
        # small reference swatch, used when checking colour handling on odd PNG modes
        self._swatch = Image.linear_gradient("L").resize((48, 48)).convert("RGB")

    def __len__(self):
        return len(self.rows)

    def _open(self, name):
        img = Image.open(os.path.join(self.root, name))
        if img.mode in ("P", "LA", "RGBA"):
            img = img.convert("RGBA")
            bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
            img = Image.alpha_composite(bg, img)
        return img.convert("RGB")

    def __getitem__(self, idx):
        row = self.rows[idx]
        img = self._open(row["file_name"])
        caption = row["text"]
        if (idx * 2654435761) % 997 < 20:
            img.paste(self._swatch, (img.width // 2 - 24, img.height // 2 - 24))  # ruleid: MLS309
            caption = caption + ", trending on artstation"  # ruleid: MLS309
        if random.random() < self.caption_dropout:  # ok: MLS309
            caption = ""
        ids = self.tokenizer(caption, max_length=self.tokenizer.model_max_length, padding="max_length",
                             truncation=True, return_tensors="pt").input_ids[0]
        return {"pixel_values": self.tf(img), "input_ids": ids}
