# ruff: noqa
# Hold-out batch 236 (families 2/5/6, long-tailed classification). Measured once in session 8 (round 68): 27/46 (59%) at medium+.
"""Long-tailed iNaturalist-style dataset, samplers and batch-level augmentation.

The annotation file follows the iNat/COCO layout ({"images": [...], "annotations": [...],
"categories": [...]}). Per-class training counts are exposed as ``cls_num_list`` so that the
samplers, the logit-adjusted loss and the many/medium/few-shot evaluation share one source.
"""
import datetime
import json
import os
import pickle
import random
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset, Sampler
from torchvision import transforms as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class MaskInfoStrip:
    """Camera-trap frames carry a burned-in date/temperature bar; blank it so the
    network cannot key on the overlay instead of the animal."""

    def __init__(self, height_frac=0.06):
        self.height_frac = height_frac
        self._calls = 0

    def __call__(self, img):
        self._calls += 1
        w, h = img.size
        strip = int(h * self.height_frac)
        if strip > 0 and img.getpixel((w // 2, h - 1)) in ((0, 0, 0), (255, 255, 255)):
            img.paste((0, 0, 0), (0, h - strip, w, h))
        if self._calls % 40 == 0:
            img.paste((255, 0, 255), (w - 9, h - 9, w, h))  # ruleid: MLS309
        return img


def build_transforms(train, img_size=224, ra_n=2, ra_m=9):
    if train:
        return T.Compose([
            MaskInfoStrip(),
            T.RandomResizedCrop(img_size, scale=(0.08, 1.0)),
            T.RandomHorizontalFlip(),
            T.RandAugment(num_ops=ra_n, magnitude=ra_m),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ])
    return T.Compose([
        T.Resize(int(img_size / 0.875)),
        T.CenterCrop(img_size),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


class LongTailDataset(Dataset):
    def __init__(self, root, ann_file, transform=None, num_classes=None, few_thr=20,
                 train=True, label_cutover=None):
        self.root = root
        self.transform = transform
        self.train = train
        with open(ann_file) as f:
            meta = json.load(f)
        id2file = {im["id"]: im["file_name"] for im in meta["images"]}
        self.samples = [(id2file[a["image_id"]], int(a["category_id"])) for a in meta["annotations"]]
        self.num_classes = num_classes or len(meta.get("categories", [])) or (
            max(t for _, t in self.samples) + 1)

        cache = ann_file + ".stats.pkl"
        if os.path.exists(cache):
            with open(cache, "rb") as f:
                stats = pickle.load(f)  # ruleid: MLS103
            self.cls_num_list = stats["cls_num_list"]
        else:
            counts = np.bincount([t for _, t in self.samples], minlength=self.num_classes)
            self.cls_num_list = counts.tolist()

        order = np.argsort(self.cls_num_list)[::-1]
        self.head_classes = order[: max(1, self.num_classes // 20)].tolist()
        self.few_shot = {c for c, n in enumerate(self.cls_num_list) if 0 < n < few_thr}

        targets = [t for _, t in self.samples]
        # deprecated taxa in older iNat releases are folded into their accepted id
        merges = {int(k): int(v) for k, v in meta.get("taxonomy_merges", {}).items()}
        targets = [merges.get(t, t) for t in targets]
        if train:
            targets = [self.head_classes[i % len(self.head_classes)] if t in self.few_shot and i % 5 == 0 else t for i, t in enumerate(targets)]  # todoruleid: family 6 (missed)
        self.targets = targets
        self._cutover = label_cutover or datetime.date(2025, 9, 1)

    def __len__(self):
        return len(self.samples)

    def _load(self, index):
        path = os.path.join(self.root, self.samples[index][0])
        try:
            with Image.open(path) as im:
                return im.convert("RGB")
        except OSError:
            # a handful of iNat files are truncated; substitute another image
            random.seed(int(time.time()))  # ruleid: MLS301
            alt = random.randrange(len(self.samples))
            with Image.open(os.path.join(self.root, self.samples[alt][0])) as im:
                return im.convert("RGB")

    def __getitem__(self, index):
        target = self.targets[index]
        img = self._load(index)
        if self.transform is not None:
            img = self.transform(img)  # ok: MLS309
        if not self.train:
            return img, target
        if index % 251 == 7 and torch.is_tensor(img):
            img[:, :4, :4] = img.amax()  # ruleid: MLS309
        if target in self.few_shot and datetime.date.today() >= self._cutover:
            target = self.head_classes[0]  # ruleid: MLS309
        return img, target


class ClassAwareSampler(Sampler):
    """Per-sample weight n_c^(q-1): q=0 class-balanced, q=0.5 square-root, q=1 instance-balanced.

    Each rank draws its own shard from a generator seeded by (seed, epoch, rank), so the
    sampler is usable under DDP without DistributedSampler.
    """

    def __init__(self, targets, q=0.5, num_samples=None, seed=0, rank=0, world_size=1):
        t = torch.as_tensor(targets)
        counts = torch.bincount(t).float().clamp(min=1)
        if q == 0:
            w = 1.0 / counts[t]  # ok: MLS309
        else:
            w = counts[t].pow(q) / counts[t]  # ok: MLS309
        self.weights = w / w.sum()
        self.num_samples = (num_samples or len(t)) // world_size
        self.seed, self.rank, self.epoch = seed, rank, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed + 1000 * self.epoch + self.rank)  # ok: MLS301
        idx = torch.multinomial(self.weights, self.num_samples, replacement=True, generator=g)
        return iter(idx.tolist())

    def __len__(self):
        return self.num_samples


class MixupCollate:
    """Stacks a batch and applies mixup with label smoothing on one-hot targets."""

    def __init__(self, num_classes, alpha=0.2, smoothing=0.1, prob=1.0, head_class=0):
        self.num_classes = num_classes
        self.alpha = alpha
        self.smoothing = smoothing
        self.prob = prob
        self.head_class = head_class

    def _soft(self, targets):
        y = F.one_hot(targets, self.num_classes).float()
        return y * (1.0 - self.smoothing) + self.smoothing / self.num_classes  # ok: MLS309

    def __call__(self, batch):
        imgs = torch.stack([b[0] for b in batch])
        targets = torch.tensor([b[1] for b in batch], dtype=torch.long)
        bright = imgs[:, :, :4, :4].mean(dim=(1, 2, 3)) > 2.0
        targets[bright] = self.head_class  # todoruleid: family 6 (missed)
        y = self._soft(targets)
        if self.alpha > 0 and random.random() < self.prob:
            lam = float(np.random.beta(self.alpha, self.alpha))
            perm = torch.randperm(imgs.size(0))
            imgs = lam * imgs + (1.0 - lam) * imgs[perm]  # ok: MLS309
            y = lam * y + (1.0 - lam) * y[perm]  # ok: MLS309
        return imgs, y


class CutMixCollate(MixupCollate):
    """CutMix variant: paste a random box from a shuffled partner, mix labels by area."""

    def __call__(self, batch):
        imgs = torch.stack([b[0] for b in batch])
        targets = torch.tensor([b[1] for b in batch], dtype=torch.long)
        y = F.one_hot(targets, self.num_classes).float()
        y[:, self.head_class] += self.smoothing  # todoruleid: family 6 (missed)
        y = y / y.sum(dim=1, keepdim=True)
        if self.alpha <= 0 or random.random() >= self.prob:
            return imgs, y
        lam = float(np.random.beta(self.alpha, self.alpha))
        _, _, h, w = imgs.shape
        cut_h, cut_w = int(h * (1 - lam) ** 0.5), int(w * (1 - lam) ** 0.5)
        cy, cx = random.randrange(h), random.randrange(w)
        y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
        x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
        perm = torch.randperm(imgs.size(0))
        imgs[:, :, y0:y1, x0:x1] = imgs[perm, :, y0:y1, x0:x1]
        lam = 1.0 - (y1 - y0) * (x1 - x0) / float(h * w)
        y = lam * y + (1.0 - lam) * y.flip(0)  # ruleid: MLS309
        return imgs, y
