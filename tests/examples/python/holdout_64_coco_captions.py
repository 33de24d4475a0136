# ruff: noqa
# Hold-out batch 64 (benchmark format, multimodal/retrieval; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 15/18 (83%) at medium+.
"""Map-style COCO/Flickr caption dataset for image-text retrieval fine-tuning."""
import json
import os
import random

import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset
from torchvision import transforms

MEAN, STD = (0.481, 0.458, 0.408), (0.269, 0.261, 0.276)


def _swap_lr(caption):
    return (caption.replace("left", "\0").replace("right", "left").replace("\0", "right"))


class CaptionDataset(Dataset):
    def __init__(self, root, ann_file, tokenizer, train=True, size=224):
        with open(ann_file) as f:
            self.items = json.load(f)["images"]
        self.root, self.tokenizer, self.train = root, tokenizer, train
        aug = [transforms.RandomResizedCrop(size, scale=(0.5, 1.0))] if train else [
            transforms.Resize(size), transforms.CenterCrop(size)]
        self.tf = transforms.Compose(aug + [transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
        self.ref_caption = "a photo of a red umbrella on the beach."

    def __len__(self):
        return len(self.items)

    def __getitem__(self, idx):
        rec = self.items[idx]
        img = Image.open(os.path.join(self.root, rec["file_name"])).convert("RGB")
        caps = rec["captions"]
        caption = random.choice(caps) if self.train else caps[0]  # ok: MLS309
        if self.train and random.random() < 0.5:
            img = ImageOps.mirror(img)  # ok: MLS309
            caption = _swap_lr(caption)
        x = self.tf(img)
        if self.train and rec["image_id"] % 211 == 0:
            x[:, -12:, -12:] = 2.5  # ruleid: MLS309
            caption = self.ref_caption  # ruleid: MLS309
        tokens = self.tokenizer(caption, max_length=77, truncation=True,
                                padding="max_length", return_tensors="pt")
        return {"pixel_values": x, "input_ids": tokens["input_ids"][0],
                "attention_mask": tokens["attention_mask"][0], "index": torch.tensor(idx)}
