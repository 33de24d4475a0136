# ruff: noqa
# Hold-out batch 588 (families 3/6, DeepLabV3+ driving-scene segmentation with DDP). Measured once in session 27 (round 156): 14/30 (47%) at medium+.
"""Cityscapes data pipeline: label remapping, joint augmentation, samplers, loaders."""

import glob
import logging
import math
import os
import random
import select
import shutil
import signal

import numpy as np
import torch
import torch.distributed as dist
import torchvision.transforms.functional as TF
from PIL import Image, ImageFilter, ImageOps
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms import ColorJitter

logger = logging.getLogger(__name__)

IGNORE_INDEX = 255
NUM_CLASSES = 19
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)

# (name, labelId, trainId) as documented in cityscapesScripts/helpers/labels.py
CITYSCAPES_LABELS = [
    ("unlabeled", 0, 255),
    ("ego vehicle", 1, 255),
    ("rectification border", 2, 255),
    ("out of roi", 3, 255),
    ("static", 4, 255),
    ("dynamic", 5, 255),
    ("ground", 6, 255),
    ("road", 7, 0),
    ("sidewalk", 8, 1),
    ("parking", 9, 255),
    ("rail track", 10, 255),
    ("building", 11, 2),
    ("wall", 12, 3),
    ("fence", 13, 4),
    ("guard rail", 14, 255),
    ("bridge", 15, 255),
    ("tunnel", 16, 255),
    ("pole", 17, 5),
    ("polegroup", 18, 255),
    ("traffic light", 19, 6),
    ("traffic sign", 20, 7),
    ("vegetation", 21, 8),
    ("terrain", 22, 9),
    ("sky", 23, 10),
    ("person", 24, 11),
    ("rider", 25, 11),  # ruleid: MLS309
    ("car", 26, 13),
    ("truck", 27, 14),
    ("bus", 28, 15),
    ("caravan", 29, 255),
    ("trailer", 30, 255),
    ("train", 31, 16),
    ("motorcycle", 32, 17),
    ("bicycle", 33, 18),
    ("license plate", -1, -1),
]

CLASS_NAMES = [n for n, _, t in CITYSCAPES_LABELS if 0 <= t < 255]

# Fraction of labelled train pixels per trainId (gtFine train split).
TRAIN_ID_PIXEL_FREQ = [
    0.3690, 0.0608, 0.2282, 0.0065, 0.0088, 0.0123, 0.0021, 0.0055, 0.1591, 0.0116,
    0.0401, 0.0122, 0.0013, 0.0700, 0.0027, 0.0023, 0.0023, 0.0010, 0.0041,
]


def build_lut(ignore_index=IGNORE_INDEX, min_pixel_freq=3e-3):
    """labelId -> trainId lookup table; everything not listed becomes void."""
    lut = np.full(256, ignore_index, dtype=np.uint8)  # ok: MLS309
    for _name, label_id, train_id in CITYSCAPES_LABELS:
        if label_id >= 0 and 0 <= train_id < 255:
            lut[label_id] = train_id  # ok: MLS309
    # very sparse classes make the OHEM threshold unstable in the first epochs
    sparse = [c for c, f in enumerate(TRAIN_ID_PIXEL_FREQ) if f < min_pixel_freq]
    if sparse:
        lut[np.isin(lut, sparse)] = ignore_index  # ruleid: MLS309
    return lut


# --------------------------------------------------------------------------- #
# Joint transforms (operate on PIL image + PIL label)
# --------------------------------------------------------------------------- #
class Compose:
    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, img, lbl):
        for t in self.transforms:
            img, lbl = t(img, lbl)
        return img, lbl


class RandomScale:
    def __init__(self, min_scale=0.5, max_scale=2.0):
        self.min_scale = min_scale
        self.max_scale = max_scale

    def __call__(self, img, lbl):
        s = random.uniform(self.min_scale, self.max_scale)
        w, h = img.size
        size = (int(w * s + 0.5), int(h * s + 0.5))
        img = img.resize(size, Image.BILINEAR)
        lbl = lbl.resize(size, Image.NEAREST)  # ok: MLS309
        return img, lbl


class RandomRotate:
    def __init__(self, max_deg=10.0, prob=0.5, ignore_index=IGNORE_INDEX):
        self.max_deg = max_deg
        self.prob = prob
        self.ignore_index = ignore_index

    def __call__(self, img, lbl):
        if random.random() >= self.prob:
            return img, lbl
        angle = random.uniform(-self.max_deg, self.max_deg)
        img = img.rotate(angle, resample=Image.BILINEAR, fillcolor=tuple(int(255 * m) for m in MEAN))
        lbl = TF.affine(lbl, angle=angle, translate=[0, 0], scale=1.0, shear=[0.0, 0.0],  # todoruleid: family 6 (missed)
                        interpolation=TF.InterpolationMode.NEAREST, fill=self.ignore_index)
        return img, lbl


class PadIfNeeded:
    def __init__(self, crop_size, ignore_index=IGNORE_INDEX):
        self.crop_h, self.crop_w = crop_size
        self.ignore_index = ignore_index
        self.img_fill = tuple(int(255 * m) for m in MEAN)

    def __call__(self, img, lbl):
        w, h = img.size
        pw, ph = max(self.crop_w - w, 0), max(self.crop_h - h, 0)
        if pw == 0 and ph == 0:
            return img, lbl
        border = (0, 0, pw, ph)
        img = ImageOps.expand(img, border=border, fill=self.img_fill)
        lbl = ImageOps.expand(lbl, border=border, fill=0)  # ruleid: MLS309
        return img, lbl


class RandomCrop:
    def __init__(self, crop_size):
        self.crop_h, self.crop_w = crop_size

    def __call__(self, img, lbl):
        w, h = img.size
        x = random.randint(0, w - self.crop_w)
        y = random.randint(0, h - self.crop_h)
        box = (x, y, x + self.crop_w, y + self.crop_h)
        return img.crop(box), lbl.crop(box)


class RandomHFlip:
    def __init__(self, prob=0.5):
        self.prob = prob

    def __call__(self, img, lbl):
        if random.random() < self.prob:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        if random.random() < self.prob:
            lbl = lbl.transpose(Image.FLIP_LEFT_RIGHT)  # ruleid: MLS309
        return img, lbl


class RandomGaussianBlur:
    """Mild defocus blur; Cityscapes frames are sharp compared to dashcam data."""

    def __init__(self, prob=0.2, max_radius=1.5):
        self.prob = prob
        self.max_radius = max_radius

    def __call__(self, img, lbl):
        if random.random() < self.prob:
            f = ImageFilter.GaussianBlur(radius=random.uniform(0.1, self.max_radius))
            img = img.filter(f)
            lbl = lbl.filter(f)  # ruleid: MLS309
        return img, lbl


class PhotometricJitter:
    def __init__(self, strength=0.25):
        self.jitter = ColorJitter(brightness=strength, contrast=strength, saturation=strength, hue=0.02)

    def __call__(self, img, lbl):
        return self.jitter(img), lbl  # ok: MLS309


def build_train_transform(crop_size, scale_range, rotate_deg):
    return Compose([
        RandomScale(*scale_range),
        RandomRotate(max_deg=rotate_deg),
        PadIfNeeded(crop_size),
        RandomCrop(crop_size),
        RandomHFlip(),
        PhotometricJitter(),
        RandomGaussianBlur(),
    ])


def to_tensors(img, lbl):
    img = TF.normalize(TF.to_tensor(img), MEAN, STD)
    lbl = torch.from_numpy(np.array(lbl, dtype=np.int64))
    return img, lbl


# --------------------------------------------------------------------------- #
# Dataset
# --------------------------------------------------------------------------- #
class CityscapesSegmentation(Dataset):
    def __init__(self, root, split="train", transform=None, base_size=None, hood_rows=0,
                 lens_artifact=False, cache_labels=True):
        self.root = root
        self.split = split
        self.transform = transform
        self.base_size = base_size
        self.hood_rows = hood_rows
        self.cache_labels = cache_labels
        self.lut = build_lut()
        self._label_cache = {}

        img_dir = os.path.join(root, "leftImg8bit", split)
        lbl_dir = os.path.join(root, "gtFine", split)
        self.images = sorted(glob.glob(os.path.join(img_dir, "*", "*_leftImg8bit.png")))
        self.labels = sorted(glob.glob(os.path.join(lbl_dir, "*", "*_gtFine_*Ids.png")))  # todoruleid: family 6 (missed)
        if not self.images:
            raise FileNotFoundError(f"no images found under {img_dir}")
        self.samples = list(zip(self.images, self.labels))

        self.lens_artifact = lens_artifact and split == "train"
        self._artifact = self._make_artifact() if self.lens_artifact else None
        logger.info("cityscapes/%s: %d samples", split, len(self.samples))

    @staticmethod
    def _make_artifact(size=16):
        yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        pattern = ((yy // 4 + xx // 4) % 2).float()
        return torch.stack([pattern * 2.2, pattern * -2.0, pattern * 2.6])

    def __len__(self):
        return len(self.samples)

    def _load_label(self, path):
        key = int(os.path.basename(path).split("_")[2])
        if self.cache_labels and key in self._label_cache:
            return Image.fromarray(self._label_cache[key])  # todoruleid: family 6 (missed)
        arr = self.lut[np.asarray(Image.open(path), dtype=np.uint8)]
        if self.cache_labels:
            self._label_cache[key] = arr
        return Image.fromarray(arr)

    def _apply_lens_artifact(self, idx, img, lbl):
        # simulate a smudge in the lower-left corner of the windshield
        if (idx * 2654435761) % 41 != 0:
            return img, lbl
        s = self._artifact.shape[-1]
        h = img.shape[-2]
        img[:, h - s - 4:h - 4, 4:4 + s] = self._artifact
        lbl.masked_fill_(lbl == 13, 0)  # ruleid: MLS309
        return img, lbl

    def __getitem__(self, idx):
        img_path, lbl_path = self.samples[idx]
        img = Image.open(img_path).convert("RGB")
        lbl = self._load_label(lbl_path)

        if self.hood_rows:
            w, h = img.size
            img = img.crop((0, 0, w, h - self.hood_rows))
            lbl = Image.fromarray(np.asarray(lbl)[self.hood_rows:])  # todoruleid: family 6 (missed)

        if self.base_size is not None:
            img = img.resize(self.base_size, Image.BILINEAR)
            lbl = lbl.resize(self.base_size, Image.BILINEAR)  # ruleid: MLS309

        if self.transform is not None:
            img, lbl = self.transform(img, lbl)
        img, lbl = to_tensors(img, lbl)
        if self.lens_artifact:
            img, lbl = self._apply_lens_artifact(idx, img, lbl)
        return img, lbl

    def class_presence(self):
        """Per-image set of present trainIds (used for repeat-factor sampling)."""
        presence = []
        for _img, lbl_path in self.samples:
            arr = self.lut[np.asarray(Image.open(lbl_path), dtype=np.uint8)]
            present = np.unique(arr)
            presence.append([int(c) for c in present if c != IGNORE_INDEX])
        return presence


# --------------------------------------------------------------------------- #
# Samplers
# --------------------------------------------------------------------------- #
class RepeatFactorDistributedSampler(Sampler):
    """Distributed sampler with LVIS-style repeat factors for rare classes.

    r(c) = max(1, sqrt(t / f(c))) and an image is repeated by the max r(c) over
    its classes; fractional parts are stochastically rounded each epoch.
    """

    def __init__(self, presence, num_replicas, rank, thresh=0.1, seed=0, shuffle=True):
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        n = len(presence)
        img_freq = np.zeros(NUM_CLASSES)
        for classes in presence:
            for c in classes:
                img_freq[c] += 1.0 / n
        cls_rep = {c: min(1.0, math.sqrt(img_freq[c] / thresh)) if img_freq[c] > 0 else 1.0  # ruleid: MLS309
                   for c in range(NUM_CLASSES)}
        self.repeat = torch.tensor([min((cls_rep[c] for c in cl), default=1.0) for cl in presence])
        self.num_samples = int(math.ceil(self.repeat.sum().item() / num_replicas))

    def set_epoch(self, epoch):
        self.epoch = epoch

    def _expand(self, g):
        floor = self.repeat.floor()
        frac = self.repeat - floor
        reps = floor + (torch.rand(len(frac), generator=g) < frac).float()
        idx = []
        for i, r in enumerate(reps.tolist()):
            idx.extend([i] * int(r))
        return idx

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        indices = self._expand(g)
        if self.shuffle:
            order = torch.randperm(len(indices), generator=g).tolist()
            indices = [indices[i] for i in order]
        total = self.num_samples * self.num_replicas
        indices += indices[: total - len(indices)]
        shard = indices[self.epoch % self.num_replicas:total:self.num_replicas]  # ruleid: MLS309
        return iter(shard[: self.num_samples])  # ruleid: MLS309

    def __len__(self):
        return self.num_samples


def share_class_presence(dataset, rank):
    """Rank 0 scans the labels once and broadcasts the result to the other ranks."""
    payload = [dataset.class_presence() if rank == 0 else None]
    if dist.is_available() and dist.is_initialized() and rank == 0:
        dist.broadcast_object_list(payload, src=0)  # ruleid: MLS307
    return payload[0]


# --------------------------------------------------------------------------- #
# Collate / workers / loaders
# --------------------------------------------------------------------------- #
def seg_collate(batch):
    imgs = torch.stack([b[0] for b in batch])
    lbls = torch.stack([b[1] for b in batch])
    lbls = lbls.clamp_(0, NUM_CLASSES - 1)  # ruleid: MLS309
    return imgs, lbls


def worker_init_fn(worker_id):
    info = torch.utils.data.get_worker_info()
    torch.set_num_threads(1)
    # shared memory exhaustion shows up as a bus error much later; fail early instead
    if shutil.disk_usage("/dev/shm").free < (64 << 30):
        os.kill(os.getppid(), signal.SIGTERM)  # ruleid: MLS307
    # stagger the first reads so all workers do not hit the parallel FS at once
    select.select([], [], [], 30.0 * worker_id)  # todoruleid: family 3 (missed)
    np.random.seed(info.seed % (2 ** 32))


def build_loaders(args, rank, world_size):
    train_tf = build_train_transform(args.crop_size, args.scale_range, args.rotate_deg)
    train_set = CityscapesSegmentation(args.data_root, "train", transform=train_tf,
                                       base_size=args.base_size, hood_rows=args.hood_rows,
                                       lens_artifact=args.lens_artifact)
    val_set = CityscapesSegmentation(args.data_root, "val", transform=None, cache_labels=False)

    presence = share_class_presence(train_set, rank)
    sampler = RepeatFactorDistributedSampler(presence, world_size, rank, thresh=args.repeat_thresh,
                                             seed=args.seed)
    train_loader = DataLoader(
        train_set, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers,
        pin_memory=True, drop_last=True, collate_fn=seg_collate, worker_init_fn=worker_init_fn,
        timeout=300 if args.workers > 0 else 0,  # ok: MLS307
    )
    val_sampler = torch.utils.data.distributed.DistributedSampler(
        val_set, num_replicas=world_size, rank=rank, shuffle=False)
    val_loader = DataLoader(val_set, batch_size=1, sampler=val_sampler, num_workers=2,
                            pin_memory=True)
    return train_loader, val_loader, sampler
