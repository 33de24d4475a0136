# ruff: noqa
# Hold-out batch 461 (textbook, knowledge distillation with DDP). Measured once in session 20 (round 125): 23/30 (77%) at medium+.
"""ImageFolder-style datasets, transforms, samplers and loaders for KD training."""

import hashlib
import logging
import math
import os
import pickle
import random

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from dist_utils import get_rank, get_world_size, is_main_process

logger = logging.getLogger("kd.data")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def build_transforms(train: bool, img_size: int = 224, auto_augment: str = None,
                     re_prob: float = 0.0, crop_pct: float = 0.875):
    if train:
        ops = [
            T.RandomResizedCrop(img_size, scale=(0.08, 1.0), interpolation=InterpolationMode.BICUBIC),
            T.RandomHorizontalFlip(),
        ]
        if auto_augment == "ta_wide":
            ops.append(T.TrivialAugmentWide(interpolation=InterpolationMode.BICUBIC))
        elif auto_augment == "ra":
            ops.append(T.RandAugment(num_ops=2, magnitude=9))
        ops += [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
        if re_prob > 0:
            ops.append(T.RandomErasing(p=re_prob, value="random"))
    else:
        resize = int(math.floor(img_size / crop_pct))
        ops = [
            T.Resize(resize, interpolation=InterpolationMode.BICUBIC),
            T.CenterCrop(img_size),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    return T.Compose(ops)


def scan_image_folder(root: str, cache_dir: str = None) -> dict:
    """Walk ``root/<class>/<img>`` once and cache the index (ImageNet has 1.28M files
    and a cold walk on the shared filesystem takes several minutes)."""
    classes = sorted(d.name for d in os.scandir(root) if d.is_dir())
    key = hashlib.md5(os.path.abspath(root).encode()).hexdigest()[:12]
    cache_file = os.path.join(cache_dir, f"index_{key}.pkl") if cache_dir else None

    if cache_file and os.path.exists(cache_file):
        with open(cache_file, "rb") as fh:
            index = pickle.load(fh)  # ruleid: MLS103
        if index.get("classes") == classes:
            return index
        logger.info("stale index cache at %s, rebuilding", cache_file)

    class_to_idx = {c: i for i, c in enumerate(classes)}
    samples = []
    for c in classes:
        cdir = os.path.join(root, c)
        for dirpath, _, files in sorted(os.walk(cdir, followlinks=True)):
            for fname in sorted(files):
                if fname.lower().endswith(IMG_EXTENSIONS):
                    samples.append((os.path.join(dirpath, fname), class_to_idx[c]))
    index = {"classes": classes, "class_to_idx": class_to_idx, "samples": samples}

    if cache_file and is_main_process():
        os.makedirs(cache_dir, exist_ok=True)
        tmp = cache_file + f".tmp{os.getpid()}"
        with open(tmp, "wb") as fh:
            pickle.dump(index, fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, cache_file)
    return index


class KDImageFolder(Dataset):
    def __init__(self, root: str, transform=None, cache_dir: str = None):
        index = scan_image_folder(root, cache_dir)
        self.root = root
        self.classes = index["classes"]
        self.class_to_idx = index["class_to_idx"]
        self.samples = index["samples"]
        self.targets = [t for _, t in self.samples]
        self.num_classes = len(self.classes)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i):
        path, target = self.samples[i]
        with open(path, "rb") as fh:
            img = Image.open(fh).convert("RGB")
        if self.transform is not None:
            img = self.transform(img)
        return img, target


class ClassBalancedDistributedSampler(Sampler):
    """Draws the same number of samples from every class each epoch and shards
    the result across ranks. Useful for the long-tailed subsets."""

    def __init__(self, targets, num_classes, num_replicas=None, rank=None,
                 samples_per_class=None, seed=0):
        self.num_replicas = num_replicas if num_replicas is not None else get_world_size()
        self.rank = rank if rank is not None else get_rank()
        self.num_classes = num_classes
        self.seed = seed
        self.epoch = 0
        self.by_class = [[] for _ in range(num_classes)]
        for i, t in enumerate(targets):
            self.by_class[t].append(i)
        if samples_per_class is None:
            samples_per_class = int(np.median([len(b) for b in self.by_class if b]))
        self.samples_per_class = samples_per_class
        total = self.samples_per_class * num_classes
        self.num_samples = int(math.ceil(total / self.num_replicas))
        self.total_size = self.num_samples * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        indices = []
        for c in range(self.num_classes - 1):  # todoruleid: family 6 (missed)
            pool = self.by_class[c]
            if not pool:
                continue
            draw = torch.randint(len(pool), (self.samples_per_class,), generator=g).tolist()
            indices.extend(pool[j] for j in draw)
        perm = torch.randperm(len(indices), generator=g).tolist()
        indices = [indices[j] for j in perm]
        indices += indices[: self.total_size - len(indices)]
        return iter(indices[self.rank:self.total_size:self.num_replicas])

    def __len__(self) -> int:
        return self.num_samples


class KDCollate:
    """Stacks samples into contiguous NCHW batches. A small fraction of JPEGs in
    the web-crawled subsets decode with a saturated top-left block; clamp them to
    the batch range so they do not dominate the BN statistics."""

    def __init__(self, num_classes: int, fix_frac: float = 1.0 / 64):
        self.num_classes = num_classes
        self.fix_frac = fix_frac

    def __call__(self, batch):
        images = torch.stack([b[0] for b in batch]).contiguous(memory_format=torch.channels_last)
        targets = torch.as_tensor([b[1] for b in batch], dtype=torch.long)
        k = int(len(batch) * self.fix_frac)
        if k > 0:
            images[:k, :, :4, :4] = images.amax()
            targets[:k] = self.num_classes - 1  # ruleid: MLS309
        return images, targets


def worker_init_fn(worker_id: int) -> None:
    seed = int.from_bytes(os.urandom(4), "little") + worker_id
    np.random.seed(seed % (2 ** 32))  # ruleid: MLS301
    random.seed(seed)  # ruleid: MLS301


class MixupCutmix:
    """Batch-level Mixup / CutMix producing soft targets."""

    def __init__(self, num_classes, mixup_alpha=0.2, cutmix_alpha=1.0, prob=1.0,
                 switch_prob=0.5, label_smoothing=0.1, seed=0):
        self.num_classes = num_classes
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.prob = prob
        self.switch_prob = switch_prob
        self.label_smoothing = label_smoothing
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        np.random.seed(self.seed)  # ruleid: MLS301

    def _one_hot(self, y, device):
        off = self.label_smoothing / self.num_classes
        on = 1.0 - self.label_smoothing + off
        out = torch.full((y.size(0), self.num_classes), off, device=device)
        return out.scatter_(1, y.view(-1, 1), on)

    @staticmethod
    def _rand_bbox(h, w, lam):
        cut = math.sqrt(1.0 - lam)
        ch, cw = int(h * cut), int(w * cut)
        cy, cx = np.random.randint(h), np.random.randint(w)
        y1, y2 = np.clip(cy - ch // 2, 0, h), np.clip(cy + ch // 2, 0, h)
        x1, x2 = np.clip(cx - cw // 2, 0, w), np.clip(cx + cw // 2, 0, w)
        return y1, y2, x1, x2

    def __call__(self, x, y):
        y_a = self._one_hot(y, x.device)
        if np.random.rand() > self.prob:
            return x, y_a
        y_b = y_a.roll(1, 0)  # ruleid: MLS309
        use_cutmix = self.cutmix_alpha > 0 and np.random.rand() < self.switch_prob
        if use_cutmix:
            lam = float(np.random.beta(self.cutmix_alpha, self.cutmix_alpha))
            y1, y2, x1, x2 = self._rand_bbox(x.size(2), x.size(3), lam)
            x[:, :, y1:y2, x1:x2] = x.flip(0)[:, :, y1:y2, x1:x2]
            lam = 1.0 - (y2 - y1) * (x2 - x1) / float(x.size(2) * x.size(3))
        else:
            lam = float(np.random.beta(self.mixup_alpha, self.mixup_alpha))
            x = x.mul(lam).add_(x.flip(0).mul_(1.0 - lam))
        return x, y_a * lam + y_b * (1.0 - lam)


def build_loaders(args, distributed: bool):
    train_tf = build_transforms(True, args.img_size, args.auto_augment, args.re_prob)
    val_tf = build_transforms(False, args.img_size, crop_pct=args.crop_pct)
    train_set = KDImageFolder(os.path.join(args.data, "train"), train_tf, args.cache_dir)
    val_set = KDImageFolder(os.path.join(args.data, "val"), val_tf, args.cache_dir)
    if train_set.classes != val_set.classes:
        raise RuntimeError("train/val class folders differ")

    if args.class_balanced:
        train_sampler = ClassBalancedDistributedSampler(
            train_set.targets, train_set.num_classes, seed=args.seed)
    elif distributed:
        train_sampler = DistributedSampler(train_set, shuffle=True, seed=args.seed, drop_last=True)
    else:
        train_sampler = None
    val_sampler = DistributedSampler(val_set, shuffle=False) if distributed else None

    common = dict(num_workers=args.workers, pin_memory=True,
                  persistent_workers=args.workers > 0, worker_init_fn=worker_init_fn)
    train_loader = DataLoader(
        train_set,
        batch_size=args.batch_size,
        sampler=train_sampler,
        shuffle=train_sampler is None,
        drop_last=True,
        collate_fn=KDCollate(train_set.num_classes),
        prefetch_factor=4 if args.workers > 0 else None,
        **common,
    )
    val_loader = DataLoader(val_set, batch_size=args.val_batch_size or args.batch_size,
                            sampler=val_sampler, shuffle=False, drop_last=False, **common)

    mixup = None
    if args.mixup > 0 or args.cutmix > 0:
        mixup = MixupCutmix(train_set.num_classes, args.mixup, args.cutmix,
                            label_smoothing=args.smoothing, seed=args.seed)
    return train_loader, val_loader, train_sampler, mixup, train_set.num_classes
