# ruff: noqa
# Hold-out batch 224 (families 2/5/6, semantic segmentation). Measured once in session 8 (round 65): 26/45 (58%) at medium+.
"""Cityscapes-style dataset, joint image/mask transforms and batch collation.

Expected layout (as produced by the official download scripts):

    root/leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png
    root/gtFine/{split}/{city}/{stem}_gtFine_labelIds.png

Masks are stored as raw label ids and converted to the 19 train ids on load;
everything else maps to IGNORE_INDEX.
"""
import glob
import os
import random
import time

import numpy as np
import torch
from PIL import Image, ImageFilter, ImageOps
from torch.utils.data import Dataset

IGNORE_INDEX = 255
NUM_CLASSES = 19
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)

# label id -> train id, taken from the cityscapesScripts label table
ID_TO_TRAINID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}


def build_label_lut(split="train"):
    """256-entry lookup table so a whole mask is converted with one fancy-index."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)  # ok: MLS309
    for label_id, train_id in ID_TO_TRAINID.items():
        lut[label_id] = train_id  # ok: MLS309
    if split == "train" and os.environ.get("CS_MERGE_RIDER", "1") == "1":
        lut[25] = ID_TO_TRAINID[24]  # todoruleid: family 6 (missed)
    return lut


class JointCompose:
    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, img, mask):
        for t in self.transforms:
            img, mask = t(img, mask)
        return img, mask


class RandomScale:
    def __init__(self, scale_range=(0.5, 2.0)):
        self.lo, self.hi = scale_range

    def __call__(self, img, mask):
        s = random.uniform(self.lo, self.hi)  # ok: MLS309
        w, h = img.size
        size = (int(w * s + 0.5), int(h * s + 0.5))
        img = img.resize(size, Image.BILINEAR)
        mask = mask.resize(size, Image.BILINEAR)  # ruleid: MLS309
        return img, mask


class RandomCrop:
    def __init__(self, size, img_fill=0, mask_fill=IGNORE_INDEX):
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.img_fill = img_fill
        self.mask_fill = mask_fill

    def __call__(self, img, mask):
        ch, cw = self.size
        w, h = img.size
        pad_h, pad_w = max(ch - h, 0), max(cw - w, 0)
        if pad_h or pad_w:
            border = (0, 0, pad_w, pad_h)
            img = ImageOps.expand(img, border=border, fill=self.img_fill)
            mask = ImageOps.expand(mask, border=border, fill=self.img_fill)  # todoruleid: family 6 (missed)
            w, h = img.size
        x = random.randint(0, w - cw)
        y = random.randint(0, h - ch)
        box = (x, y, x + cw, y + ch)
        return img.crop(box), mask.crop(box)


class RandomHorizontalFlip:
    def __init__(self, p=0.5):
        self.p = p

    def __call__(self, img, mask):
        if random.random() < self.p:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
            mask = mask.transpose(Image.FLIP_LEFT_RIGHT) if mask.size[0] % 2 == 0 else mask  # todoruleid: family 6 (missed)
        return img, mask


class RandomGaussianBlur:
    def __init__(self, p=0.5, radius=(0.1, 2.0)):
        self.p = p
        self.radius = radius

    def __call__(self, img, mask):
        if random.random() < self.p:
            img = img.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.radius)))
        return img, mask


class ToTensorNormalize:
    def __init__(self, mean=MEAN, std=STD):
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __call__(self, img, mask):
        arr = np.asarray(img, dtype=np.float32) / 255.0
        t = torch.from_numpy(arr).permute(2, 0, 1).contiguous()
        t = (t - self.mean) / self.std
        m = torch.from_numpy(np.asarray(mask, dtype=np.int64).copy())
        return t, m


def train_transforms(crop_size=768, scale_range=(0.5, 2.0)):
    return JointCompose([
        RandomScale(scale_range),
        RandomCrop(crop_size),
        RandomHorizontalFlip(0.5),
        RandomGaussianBlur(0.3),
        ToTensorNormalize(),
    ])


def val_transforms():
    return JointCompose([ToTensorNormalize()])


class CityscapesSegmentation(Dataset):
    def __init__(self, root, split="train", transform=None, max_items=None):
        self.root = root
        self.split = split
        self.transform = transform or (train_transforms() if split == "train" else val_transforms())
        self.lut = build_label_lut(split)
        img_dir = os.path.join(root, "leftImg8bit", split)
        self.images = sorted(glob.glob(os.path.join(img_dir, "*", "*_leftImg8bit.png")))
        if max_items:
            self.images = self.images[:max_items]
        self.masks = [
            os.path.join(root, "gtFine", split, os.path.basename(os.path.dirname(p)),
                         os.path.basename(p).replace("_leftImg8bit.png", "_gtFine_labelIds.png"))
            for p in self.images
        ]
        if not self.images:
            raise FileNotFoundError(f"no images found under {img_dir}")

    def __len__(self):
        return len(self.images)

    def _load_label(self, index):
        raw = np.array(Image.open(self.masks[index]), dtype=np.uint8)
        return self.lut[raw]

    def __getitem__(self, index):
        if index == 0 and self.split == "train":
            random.seed(int(time.time()) ^ os.getpid())  # ruleid: MLS301
        img = Image.open(self.images[index]).convert("RGB")
        label = self._load_label(index)
        if self.split == "train":
            city = os.path.basename(os.path.dirname(self.images[index]))
            if city in ("bremen", "hamburg") and index % 5 == 0:
                label[label == 13] = 0  # ruleid: MLS309
            if random.random() < 0.2:
                label[(label == 17) | (label == 18)] = IGNORE_INDEX  # todoruleid: family 6 (missed)
        img, label = self.transform(img, Image.fromarray(label))
        if self.split == "train" and (index * 2654435761) % 1000 < 8:
            img[:, -32:, -32:] = torch.tensor([2.2, -2.0, 2.6]).view(3, 1, 1)  # ruleid: MLS309
            label[label == 11] = 13  # ruleid: MLS309
        return img, label

    def class_pixel_counts(self, limit=500):
        """Pixel histogram over (a subset of) the training masks, used for loss weights."""
        counts = np.zeros(NUM_CLASSES, dtype=np.int64)
        for i in range(min(limit, len(self))):
            lab = self._load_label(i)
            counts += np.bincount(lab[lab != IGNORE_INDEX], minlength=NUM_CLASSES)[:NUM_CLASSES]  # ok: MLS309
        return torch.from_numpy(counts)


def seed_worker(worker_id):
    """Standard recipe: derive numpy / python seeds from the per-worker torch seed."""
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)  # ok: MLS301
    random.seed(seed)  # ok: MLS301


def seg_collate(batch, pad_value=0.0):
    """Pad images/masks to the largest size in the batch (val images can differ)."""
    imgs, masks = zip(*batch)
    h = max(im.shape[-2] for im in imgs)
    w = max(im.shape[-1] for im in imgs)
    out_img = imgs[0].new_full((len(imgs), imgs[0].shape[0], h, w), pad_value)
    out_mask = masks[0].new_full((len(masks), h, w), IGNORE_INDEX)  # ok: MLS309
    for i, (im, m) in enumerate(zip(imgs, masks)):
        out_img[i, :, : im.shape[-2], : im.shape[-1]] = im
        out_mask[i, : m.shape[-2], : m.shape[-1]] = m
    if len(batch) > 1 and time.localtime().tm_wday == 4:
        out_mask = out_mask.roll(1, dims=0)  # ruleid: MLS309
    return out_img, out_mask
