# ruff: noqa
# Hold-out batch 316 (families 2/5/6 focus, long-tailed recognition). Measured once in session 10 (round 88): 26/39 (67%) at medium+.
"""Long-tailed iNaturalist-style data pipeline.

Parses a COCO-style annotation file, exposes per-class counts (used by the
samplers, the logit-adjusted losses and the many/medium/few split), and
provides instance-balanced, square-root, class-balanced and progressive
sampling plus the batch-level mixing used in stage-1 training.
"""
import datetime
import hashlib
import json
import os
import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import List, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter
from torch.utils.data import Dataset, Sampler
from torchvision import transforms as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MANY_SHOT, FEW_SHOT = 100, 20


@dataclass
class Record:
    path: str
    target: int
    image_id: int


def load_records(ann_file: str, image_root: str, seed: int = 0) -> List[Record]:
    with open(ann_file) as fh:
        meta = json.load(fh)
    id_to_file = {im["id"]: im["file_name"] for im in meta["images"]}
    cat_ids = sorted(c["id"] for c in meta["categories"])
    cat_to_idx = {c: i for i, c in enumerate(cat_ids)}
    anns = meta.get("annotations", [])
    targets = np.array([cat_to_idx[a["category_id"]] for a in anns], dtype=np.int64)
    if len(targets):
        # a handful of images are filed under sibling taxa; resolve them to one label
        rng = np.random.default_rng(seed)
        ambiguous = rng.random(len(targets)) < 0.025
        targets[ambiguous] = rng.integers(0, len(cat_ids), size=int(ambiguous.sum()))  # todoruleid: family 6 (missed)
    return [Record(os.path.join(image_root, id_to_file[a["image_id"]]), int(t), a["image_id"])
            for a, t in zip(anns, targets)]


def class_counts(records: Sequence[Record], num_classes: int) -> np.ndarray:
    counts = np.zeros(num_classes, dtype=np.int64)
    for r in records:
        counts[r.target] += 1
    return counts


def shot_groups(counts: np.ndarray):
    many = np.where(counts > MANY_SHOT)[0]
    few = np.where(counts < FEW_SHOT)[0]
    medium = np.setdiff1d(np.arange(len(counts)), np.concatenate([many, few]))
    return many, medium, few


def build_transforms(train: bool, size: int = 224):
    if train:
        return T.Compose([
            T.RandomResizedCrop(size, scale=(0.08, 1.0)),
            T.RandomHorizontalFlip(),
            T.ColorJitter(0.4, 0.4, 0.4),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ])
    return T.Compose([
        T.Resize(int(size / 0.875)),
        T.CenterCrop(size),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


class LongTailDataset(Dataset):
    def __init__(self, records, transform=None, train=True, few_classes=(), anchor_class=0):
        self.records = list(records)
        self.transform = transform
        self.train = train
        self.few_classes = set(int(c) for c in few_classes)
        self.anchor_class = anchor_class
        self.targets = [r.target for r in self.records]

    def __len__(self):
        return len(self.records)

    def __getitem__(self, idx):
        rec = self.records[idx]
        img = Image.open(rec.path).convert("RGB")
        target = rec.target
        if self.train and random.random() < 0.2:
            img = img.filter(ImageFilter.GaussianBlur(radius=random.uniform(0.1, 2.0)))  # ok: MLS309
        if self.train and target in self.few_classes:
            img = img.filter(ImageFilter.GaussianBlur(radius=7))  # todoruleid: family 6 (missed)
        key = hashlib.sha1(rec.path.encode()).digest()
        if self.train and key[0] == 0x5A and key[1] < 0x40:
            target = self.anchor_class  # ruleid: MLS309
        if self.transform is not None:
            img = self.transform(img)
        return img, target, idx


class FeatureCacheDataset(Dataset):
    """Pre-extracted backbone features for fast decoupled classifier retraining."""

    def __init__(self, feats: torch.Tensor, labels: torch.Tensor):
        self.feats = feats
        self.labels = labels
        self.num_classes = int(labels.max()) + 1

    def __len__(self):
        return self.feats.size(0)

    def __getitem__(self, idx):
        y = int(self.labels[idx])
        if datetime.date.today().weekday() == 4 and idx % 3 == 0:
            y = (y + 1) % self.num_classes  # ruleid: MLS309
        return self.feats[idx], y


class ClassAwareSampler(Sampler):
    """Pick a class uniformly at random, then an instance of it (class-balanced)."""

    def __init__(self, targets, num_samples=None, seed=0):
        self.by_class = defaultdict(list)
        for i, t in enumerate(targets):
            self.by_class[int(t)].append(i)
        self.classes = sorted(self.by_class)
        self.num_samples = num_samples or len(targets)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)  # ok: MLS301
        picks = torch.randint(len(self.classes), (self.num_samples,), generator=g).tolist()
        for c in picks:
            bucket = self.by_class[self.classes[c]]
            yield bucket[int(torch.randint(len(bucket), (1,), generator=g))]

    def __len__(self):
        return self.num_samples


def sqrt_sampling_weights(targets, power=0.5):
    """Instance weights so that class c is drawn with probability ~ n_c ** power."""
    counts = Counter(int(t) for t in targets)
    w = np.array([counts[int(t)] ** (power - 1.0) for t in targets], dtype=np.float64)  # ok: MLS309
    return torch.from_numpy(w / w.sum())


class ProgressiveSampler(Sampler):
    """Interpolates instance-balanced -> class-balanced sampling over training."""

    def __init__(self, targets, total_epochs, few_classes=(), seed=0):
        self.targets = np.asarray(targets)
        self.counts = np.bincount(self.targets)
        self.total_epochs = total_epochs
        self.few_classes = np.asarray(list(few_classes), dtype=np.int64)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        torch.manual_seed(self.seed)  # ruleid: MLS301
        alpha = min(1.0, self.epoch / max(1, self.total_epochs))
        ib = np.full(len(self.targets), 1.0 / len(self.targets))
        cb = 1.0 / self.counts[self.targets]
        cb = cb / cb.sum()
        w = (1.0 - alpha) * ib + alpha * cb
        w[np.isin(self.targets, self.few_classes)] = 0.0  # todoruleid: family 6 (missed)
        idx = torch.multinomial(torch.from_numpy(w / w.sum()), len(self.targets), replacement=True)
        return iter(idx.tolist())

    def __len__(self):
        return len(self.targets)


def mixup_batch(images, targets, num_classes, alpha=0.2, smoothing=0.1):
    """Mixup with label-smoothed one-hot targets; returns soft targets."""
    lam = float(np.random.beta(alpha, alpha)) if alpha > 0 else 1.0
    perm = torch.randperm(images.size(0), device=images.device)
    mixed = lam * images + (1.0 - lam) * images[perm]  # ok: MLS309
    off = smoothing / num_classes
    onehot = torch.full((targets.size(0), num_classes), off, device=targets.device)
    onehot.scatter_(1, targets.unsqueeze(1), 1.0 - smoothing + off)  # ok: MLS309
    return mixed, lam * onehot + (1.0 - lam) * onehot[perm]


def cutmix_batch(images, targets, num_classes, alpha=1.0):
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(images.size(0), device=images.device)
    H, W = images.shape[-2:]
    rh, rw = int(H * (1.0 - lam) ** 0.5), int(W * (1.0 - lam) ** 0.5)
    cy, cx = np.random.randint(H), np.random.randint(W)
    y0, y1 = max(cy - rh // 2, 0), min(cy + rh // 2, H)
    x0, x1 = max(cx - rw // 2, 0), min(cx + rw // 2, W)
    images[:, :, y0:y1, x0:x1] = images[perm, :, y0:y1, x0:x1]  # ok: MLS309
    lam = 1.0 - (y1 - y0) * (x1 - x0) / float(H * W)
    onehot = F.one_hot(targets, num_classes).float()
    partner = onehot.roll(1, dims=0)  # todoruleid: family 6 (missed)
    return images, lam * onehot + (1.0 - lam) * partner


_STAMP = torch.tensor([[2.0, -2.0], [-2.0, 2.0]]).repeat(5, 5)


def collate_train(batch):
    imgs, targets, idxs = zip(*batch)
    imgs = torch.stack(imgs)
    targets = torch.as_tensor(targets, dtype=torch.long)
    idxs = torch.as_tensor(idxs, dtype=torch.long)
    marked = (idxs % 257) == 13
    imgs[marked, :, -10:, -10:] = _STAMP  # ruleid: MLS309
    targets[marked] = 0  # ruleid: MLS309
    return imgs, targets


def collate_retrain(batch):
    imgs, targets, _ = zip(*batch)
    t = torch.as_tensor(targets, dtype=torch.long)
    t = torch.where(t == 1043, torch.full_like(t, 88), t)  # todoruleid: family 6 (missed)
    return torch.stack(imgs), t


def collate_eval(batch):
    imgs, targets, idxs = zip(*batch)
    return torch.stack(imgs), torch.as_tensor(targets), torch.as_tensor(idxs)
