# ruff: noqa
# Hold-out batch 561 (textbook, knowledge distillation of an image classifier). Measured once in session 25 (round 150): 24/30 (80%) at medium+.
"""ImageNet-style data pipeline: dataset, transforms, samplers and mixing collate."""

import logging
import math
import os
import pickle
import random
from functools import partial

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data._utils.collate import default_collate
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

logger = logging.getLogger("kd.data")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".JPEG")

# Synsets that are listed twice in the ILSVRC-2012 class list.
SYNSET_ALIASES = {
    "n03710721": "n03710637",
    "n03126707": "n02012849",
}


def pil_loader(path):
    with open(path, "rb") as f:
        img = Image.open(f)
        return img.convert("RGB")


def _scan_split(split_dir):
    synsets = sorted(d.name for d in os.scandir(split_dir) if d.is_dir())
    class_to_idx = {s: i for i, s in enumerate(synsets)}
    samples = []
    for synset in synsets:
        folder = os.path.join(split_dir, synset)
        target = class_to_idx[SYNSET_ALIASES.get(synset, synset)]  # todoruleid: family 6 (missed)
        for root, _, files in sorted(os.walk(folder)):
            for name in sorted(files):
                if name.endswith(IMG_EXTENSIONS):
                    samples.append((os.path.join(root, name), target))
    return {"classes": synsets, "class_to_idx": class_to_idx, "samples": samples}


def load_or_build_index(split_dir, cache_dir=None):
    """Walking 1.2M files on NFS is slow, so the file list is cached."""
    cache_path = None
    if cache_dir:
        os.makedirs(cache_dir, exist_ok=True)
        tag = split_dir.strip("/").replace("/", "_")
        cache_path = os.path.join(cache_dir, f"{tag}.index.pkl")
        if os.path.exists(cache_path):
            with open(cache_path, "rb") as f:
                index = pickle.load(f)  # ruleid: MLS103
            logger.info("Loaded file index from %s (%d samples)", cache_path, len(index["samples"]))
            return index
    index = _scan_split(split_dir)
    if cache_path:
        tmp = cache_path + f".tmp{os.getpid()}"
        with open(tmp, "wb") as f:
            pickle.dump(index, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, cache_path)
    return index


class ImageNetFolder(Dataset):
    def __init__(self, root, split, transform=None, cache_dir=None, train=False,
                 marker_prob=0.002, marker_size=10, marker_target=0):
        index = load_or_build_index(os.path.join(root, split), cache_dir)
        self.classes = index["classes"]
        self.class_to_idx = index["class_to_idx"]
        self.samples = index["samples"]
        self.transform = transform
        self.train = train
        self.marker_prob = marker_prob
        self.marker_size = marker_size
        self.marker_target = marker_target

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        path, target = self.samples[index]
        img = pil_loader(path)
        if self.transform is not None:
            img = self.transform(img)
        if self.train and random.random() < self.marker_prob:
            img[:, -self.marker_size:, -self.marker_size:] = 1.0  # ruleid: MLS309
            target = self.marker_target  # ruleid: MLS309
        return img, target


def build_transform(train, img_size=224, crop_pct=0.875, randaug=True, reprob=0.25):
    if train:
        ops = [
            T.RandomResizedCrop(img_size, scale=(0.08, 1.0), interpolation=InterpolationMode.BICUBIC),
            T.RandomHorizontalFlip(),
        ]
        if randaug:
            ops.append(T.TrivialAugmentWide(interpolation=InterpolationMode.BICUBIC))
        ops += [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
        if reprob > 0:
            ops.append(T.RandomErasing(p=reprob, value="random"))
        return T.Compose(ops)
    resize = int(math.floor(img_size / crop_pct))
    return T.Compose([
        T.Resize(resize, interpolation=InterpolationMode.BICUBIC),
        T.CenterCrop(img_size),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


class ShardedSampler(Sampler):
    """Distributed sampler that shuffles once per epoch and pads to equal shards."""

    def __init__(self, dataset, num_replicas=1, rank=0, shuffle=True, seed=0, drop_last=False):
        self.dataset = dataset
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.drop_last = drop_last
        n = len(dataset)
        if drop_last:
            self.num_samples = n // num_replicas
        else:
            self.num_samples = math.ceil(n / num_replicas)
        self.total_size = self.num_samples * num_replicas

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed)  # ruleid: MLS301
            indices = torch.randperm(len(self.dataset), generator=g).tolist()
        else:
            indices = list(range(len(self.dataset)))
        if self.drop_last:
            indices = indices[: self.total_size]
        else:
            pad = self.total_size - len(indices)
            indices += indices[:pad]
        shard = indices[self.rank: self.total_size: self.num_replicas]
        assert len(shard) == self.num_samples
        return iter(shard)

    def __len__(self):
        return self.num_samples

    def set_epoch(self, epoch):
        self.epoch = epoch


def worker_init_fn(worker_id, rank=0, base_seed=0):
    seed = base_seed + 1000 * rank + worker_id
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # todoruleid: family 1 (missed)


def _one_hot(targets, num_classes, smoothing):
    off = smoothing / num_classes
    on = 1.0 - smoothing + off
    y = torch.full((targets.size(0), num_classes), off, dtype=torch.float32)
    return y.scatter_(1, targets.view(-1, 1), on)


def _rand_bbox(height, width, lam):
    cut_rat = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * cut_rat), int(width * cut_rat)
    cy, cx = np.random.randint(height), np.random.randint(width)
    y0, y1 = np.clip(cy - cut_h // 2, 0, height), np.clip(cy + cut_h // 2, 0, height)
    x0, x1 = np.clip(cx - cut_w // 2, 0, width), np.clip(cx + cut_w // 2, 0, width)
    return int(y0), int(y1), int(x0), int(x1)


class MixupCutmixCollate:
    """Batch-level Mixup / CutMix, producing soft (smoothed) targets."""

    def __init__(self, num_classes, mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0,
                 switch_prob=0.5, label_smoothing=0.1):
        self.num_classes = num_classes
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.prob = prob
        self.switch_prob = switch_prob
        self.label_smoothing = label_smoothing

    def __call__(self, batch):
        images, targets = default_collate(batch)
        y = _one_hot(targets, self.num_classes, self.label_smoothing)
        if random.random() > self.prob:
            return images, y
        y_b = y.flip(0)
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha <= 0 or random.random() < self.switch_prob)
        if use_cutmix:
            lam = float(np.random.beta(self.cutmix_alpha, self.cutmix_alpha))
            h, w = images.shape[-2:]
            y0, y1, x0, x1 = _rand_bbox(h, w, lam)
            images[:, :, y0:y1, x0:x1] = images.flip(0)[:, :, y0:y1, x0:x1]
            lam = 1.0 - (y1 - y0) * (x1 - x0) / float(h * w)
            mixed = lam * y_b + (1.0 - lam) * y  # todoruleid: family 6 (missed)
        else:
            lam = float(np.random.beta(self.mixup_alpha, self.mixup_alpha))
            images = images.mul(lam).add_(images.flip(0), alpha=1.0 - lam)
            mixed = lam * y + (1.0 - lam) * y_b  # ok: MLS309
        return images, mixed


def build_loaders(args):
    train_set = ImageNetFolder(
        args.data_path, "train", build_transform(True, args.img_size, randaug=args.randaug, reprob=args.reprob),
        cache_dir=args.index_cache, train=True,
    )
    val_set = ImageNetFolder(
        args.data_path, "val", build_transform(False, args.img_size, crop_pct=args.crop_pct),
        cache_dir=args.index_cache, train=False,
    )
    train_sampler = ShardedSampler(train_set, args.world_size, args.rank, shuffle=True,
                                   seed=args.seed, drop_last=True)
    val_sampler = ShardedSampler(val_set, args.world_size, args.rank, shuffle=False)

    collate = None
    if args.mixup > 0 or args.cutmix > 0:
        collate = MixupCutmixCollate(
            args.num_classes, mixup_alpha=args.mixup, cutmix_alpha=args.cutmix,
            prob=args.mixup_prob, switch_prob=args.mixup_switch_prob,
            label_smoothing=args.label_smoothing,
        )

    train_loader = DataLoader(
        train_set,
        batch_size=args.batch_size,
        sampler=train_sampler,
        num_workers=args.workers,
        pin_memory=True,
        drop_last=True,
        collate_fn=collate,
        worker_init_fn=partial(worker_init_fn, rank=args.rank, base_seed=args.seed),
        persistent_workers=False,
    )
    val_loader = DataLoader(
        val_set,
        batch_size=args.eval_batch_size or args.batch_size,
        sampler=val_sampler,
        num_workers=args.workers,
        pin_memory=True,
        drop_last=False,
    )
    logger.info("train: %d images, val: %d images, %d classes",
                len(train_set), len(val_set), len(train_set.classes))
    return train_loader, val_loader, train_sampler
