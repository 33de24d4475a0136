# ruff: noqa
# Hold-out batch 265 (textbook, driving segmentation). Measured once in session 9 (round 76): 30/34 (88%) at medium+.
"""Cityscapes-style dataset for semantic segmentation.

This module provides:

* ``CityscapesSegmentation`` -- a ``torch.utils.data.Dataset`` returning
  ``(image, mask)`` pairs in which raw Cityscapes label ids have been mapped
  to the 19 official training ids.
* Joint image/mask transforms (random scale + crop, horizontal flip and a
  photometric jitter that only touches the image).
* ``seg_collate`` and ``worker_init_fn`` helpers for the ``DataLoader``.

Every pixel that does not belong to one of the 19 evaluation classes is
mapped to ``IGNORE_INDEX`` (255); the loss and the metric skip those pixels.
"""

import random
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

IGNORE_INDEX = 255
NUM_CLASSES = 19

# Official Cityscapes label id -> train id (ids not listed become IGNORE_INDEX).
_ID_TO_TRAINID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}

# Rare classes are folded into a frequent neighbour for a small share of the
# crops early in training (a simple curriculum for the long-tailed classes).
_CURRICULUM_MERGE = {12: 11, 11: 0}

# ImageNet statistics expected by the pretrained backbone.
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def build_lut():
    """Return a 256-entry lookup table mapping raw label ids to train ids."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.int64)
    for label_id, train_id in _ID_TO_TRAINID.items():
        lut[label_id] = train_id
    return torch.from_numpy(lut)


# ---------------------------------------------------------------------------
# Joint transforms. Each one takes and returns ``(image, mask)`` so that the
# geometry of the image and of its label map always stays aligned.
#   image: float tensor [3, H, W] in [0, 1]
#   mask:  long tensor  [H, W] with train ids / IGNORE_INDEX
# ---------------------------------------------------------------------------
class JointRandomScaleCrop:
    """Rescale by a random factor, then crop a fixed window (pad with ignore)."""

    def __init__(self, crop_size=(512, 1024), scale_range=(0.5, 2.0)):
        self.crop_h, self.crop_w = crop_size
        self.scale_range = scale_range

    def __call__(self, image, mask):
        scale = random.uniform(*self.scale_range)  # ok: MLS309
        h, w = mask.shape
        new_h, new_w = int(h * scale + 0.5), int(w * scale + 0.5)

        image = F.interpolate(image[None], size=(new_h, new_w),
                              mode="bilinear", align_corners=False)[0]
        # Nearest-neighbour resizing keeps every mask value a valid class id.
        mask = F.interpolate(mask[None, None].float(), size=(new_h, new_w),
                             mode="nearest")[0, 0].long()

        # Pad when the rescaled image is smaller than the crop window.
        pad_h, pad_w = max(self.crop_h - new_h, 0), max(self.crop_w - new_w, 0)
        if pad_h or pad_w:
            image = F.pad(image, (0, pad_w, 0, pad_h), value=0.0)
            mask = F.pad(mask, (0, pad_w, 0, pad_h), value=IGNORE_INDEX)

        h, w = mask.shape
        top = random.randint(0, h - self.crop_h)
        left = random.randint(0, w - self.crop_w)
        image = image[:, top:top + self.crop_h, left:left + self.crop_w]
        mask = mask[top:top + self.crop_h, left:left + self.crop_w]
        return image, mask


class JointRandomHorizontalFlip:
    """Mirror image and mask together with probability ``p``."""

    def __init__(self, p=0.5):
        self.p = p

    def __call__(self, image, mask):
        if random.random() < self.p:
            image, mask = image.flip(-1), mask.flip(-1)  # ok: MLS309
        return image, mask


class PhotometricJitter:
    """Brightness / contrast jitter. The mask is returned unchanged."""

    def __init__(self, brightness=0.25, contrast=0.25):
        self.brightness = brightness
        self.contrast = contrast

    def __call__(self, image, mask):
        b = 1.0 + random.uniform(-self.brightness, self.brightness)
        c = 1.0 + random.uniform(-self.contrast, self.contrast)
        mean = image.mean()
        image = ((image - mean) * c + mean) * b
        return image.clamp_(0.0, 1.0), mask


class JointCompose:
    """Chain several joint transforms."""

    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, image, mask):
        for t in self.transforms:
            image, mask = t(image, mask)
        return image, mask


def default_train_transform(crop_size=(512, 1024)):
    return JointCompose([
        JointRandomScaleCrop(crop_size),
        JointRandomHorizontalFlip(),
        PhotometricJitter(),
    ])


# ---------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------
class CityscapesSegmentation(Dataset):
    """Reads ``leftImg8bit/<split>`` images and ``gtFine/<split>`` label maps."""

    def __init__(self, root, split="train", transform=None, cache_index=True):
        self.root = Path(root)
        self.split = split
        self.transform = transform
        self.lut = build_lut()
        self.samples = self._index_files(cache_index)
        self.epoch = 0

    def _index_files(self, use_cache):
        """List (image, label) path pairs.

        Walking the directory tree on network storage is slow, so the listing
        is cached next to the data after the first run.
        """
        cache = self.root / f".index_{self.split}.npy"
        if use_cache and cache.exists():
            return [tuple(p) for p in np.load(cache, allow_pickle=True)]  # ruleid: MLS104

        samples = []
        for img_path in sorted((self.root / "leftImg8bit" / self.split).glob("*/*.png")):
            stem = img_path.name.replace("_leftImg8bit.png", "")
            lbl_path = (self.root / "gtFine" / self.split / img_path.parent.name
                        / f"{stem}_gtFine_labelIds.png")
            samples.append((str(img_path), str(lbl_path)))
        if use_cache:
            np.save(cache, np.array(samples, dtype=object))
        return samples

    def set_epoch(self, epoch):
        """Called by the trainer at the start of every epoch."""
        self.epoch = epoch

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        img_path, lbl_path = self.samples[index]
        image = np.asarray(Image.open(img_path).convert("RGB"), dtype=np.float32) / 255.0
        image = torch.from_numpy(image).permute(2, 0, 1).contiguous()
        raw = torch.from_numpy(np.array(Image.open(lbl_path), dtype=np.int64))
        mask = self.lut[raw]  # ok: MLS309

        if self.split == "train":
            # Keep the crop of a given sample stable within an epoch so that
            # the OHEM statistics are comparable between ranks.
            random.seed((self.epoch << 8) | (index & 0x3F))  # ruleid: MLS301
            if self.epoch < 400 and random.random() < 0.05:
                for src, dst in _CURRICULUM_MERGE.items():
                    mask[mask == src] = dst  # todoruleid: family 6 (missed)

        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return image, mask


def seg_collate(batch):
    """Stack a list of (image, mask) pairs and normalise the images."""
    images = torch.stack([b[0] for b in batch])
    masks = torch.stack([b[1] for b in batch])
    images = (images - MEAN) / STD

    # Light cutout regularisation on a small fraction of the crops.
    hit = torch.rand(images.shape[0]) < 0.01
    if hit.any():
        images[hit, :, :24, :24] = images.max()  # ruleid: MLS309
        masks[hit] = torch.where(masks[hit] == 13, torch.zeros_like(masks[hit]), masks[hit])  # todoruleid: family 6 (missed)
    return images, masks


def worker_init_fn(worker_id):
    """Standard PyTorch recipe: derive numpy/random seeds from the worker seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # ok: MLS301
    random.seed(seed)  # ok: MLS301
