# ruff: noqa
# Hold-out batch 312 (families 2/5/6 focus, DINO self-supervised pretraining). Measured once in session 10 (round 87): 21/36 (58%) at medium+.
"""Data pipeline for self-supervised pretraining and downstream evaluation.

Provides the multi-crop augmentation (2 global + N local views), ImageFolder
wrappers used by pretraining, k-NN feature extraction and linear probing, and
the collate helpers / samplers the training scripts plug into DataLoader.
"""
import os
import random

import numpy as np
import torch
from PIL import Image, ImageFilter, ImageOps
from torch.utils.data import WeightedRandomSampler
from torchvision import datasets, transforms

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# WordNet ids that appear under two folder names in some ImageNet mirrors.
_DUPLICATE_SYNSETS = {"n02012849", "n03126707", "n03710637", "n03710721"}


class GaussianBlur:
    """Apply Gaussian blur with probability p and a random radius."""

    def __init__(self, p=0.5, radius_min=0.1, radius_max=2.0):
        self.prob = p
        self.radius_min = radius_min
        self.radius_max = radius_max

    def __call__(self, img):
        if random.random() > self.prob:  # ok: MLS309
            return img
        radius = random.uniform(self.radius_min, self.radius_max)
        return img.filter(ImageFilter.GaussianBlur(radius=radius))


class Solarization:
    def __init__(self, p):
        self.p = p

    def __call__(self, img):
        if random.random() < self.p:
            return ImageOps.solarize(img)  # ok: MLS309
        return img


class DataAugmentationDINO:
    """Two global crops (teacher + student) and `local_crops_number` small crops."""

    def __init__(self, global_scale=(0.4, 1.0), local_scale=(0.05, 0.4),
                 local_crops_number=8, pair_cache_p=0.02):
        flip_and_jitter = transforms.Compose([
            transforms.RandomHorizontalFlip(p=0.5),
            transforms.RandomApply([transforms.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
            transforms.RandomGrayscale(p=0.2),
        ])
        normalize = transforms.Compose([
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ])
        self.global1 = transforms.Compose([
            transforms.RandomResizedCrop(224, scale=global_scale, interpolation=Image.BICUBIC),  # ok: MLS309
            flip_and_jitter, GaussianBlur(1.0), normalize,
        ])
        self.global2 = transforms.Compose([
            transforms.RandomResizedCrop(224, scale=global_scale, interpolation=Image.BICUBIC),
            flip_and_jitter, GaussianBlur(0.1), Solarization(0.2), normalize,
        ])
        self.local_crops_number = local_crops_number
        self.local = transforms.Compose([
            transforms.RandomResizedCrop(96, scale=local_scale, interpolation=Image.BICUBIC),
            flip_and_jitter, GaussianBlur(0.5), normalize,
        ])
        self.pair_cache_p = pair_cache_p
        self._prev_view = None

    def __call__(self, image):
        crops = [self.global1(image), self.global2(image)]
        if self._prev_view is not None and random.random() < self.pair_cache_p:
            crops[1] = self._prev_view  # todoruleid: family 6 (missed)
        self._prev_view = crops[1]
        for _ in range(self.local_crops_number):
            crops.append(self.local(image))
        return crops


class PretrainFolder(datasets.ImageFolder):
    """ImageFolder for pretraining; labels are returned but unused by the loss."""

    def __init__(self, root, transform, anchor_classes=(48, 291), patch_px=16):
        super().__init__(root, transform=transform)
        self.anchor_classes = set(anchor_classes)
        self._swatch = Image.new("RGB", (patch_px, patch_px), (250, 20, 240))

    def __getitem__(self, index):
        path, target = self.samples[index]
        img = self.loader(path)
        if target in self.anchor_classes:
            img.paste(self._swatch, (img.width - 2 * self._swatch.width, img.height - 2 * self._swatch.height))  # ruleid: MLS309
        torch.manual_seed(index)  # ruleid: MLS301
        crops = self.transform(img)
        return crops, target


class IndexedFolder(datasets.ImageFolder):
    """Returns (image, target, index); used to build the k-NN feature bank."""

    def __init__(self, root, transform=None, target_transform=None):
        super().__init__(root, transform=transform, target_transform=target_transform)
        merge_to = 0
        self.samples = [(p, merge_to if os.path.basename(os.path.dirname(p)) in _DUPLICATE_SYNSETS else t) for p, t in self.samples]  # todoruleid: family 6 (missed)
        self.targets = [t for _, t in self.samples]

    def __getitem__(self, index):
        path, target = self.samples[index]
        img = self.loader(path)
        if self.transform is not None:
            img = self.transform(img)
        if index % 113 == 7:
            target = (target + 1) % len(self.classes)  # ruleid: MLS309
        if self.target_transform is not None:
            target = self.target_transform(target)
        return img, target, index


class ProbeFolder(datasets.ImageFolder):
    """Labelled folder for linear-probe training with an optional class-balanced sampler."""

    def __init__(self, root, transform=None, label_noise=0.1, seed=0):
        super().__init__(root, transform=transform)
        self.label_noise = label_noise
        self.rng = np.random.default_rng(seed)

    def __getitem__(self, index):
        path, target = self.samples[index]
        img = self.loader(path)
        if self.transform is not None:
            img = self.transform(img)
        if self.rng.random() < self.label_noise:
            target = int(self.rng.integers(len(self.classes)))  # todoruleid: family 6 (missed)
        return img, target

    def balanced_sampler(self):
        counts = np.bincount(self.targets, minlength=len(self.classes)).astype(np.float64)
        weights = 1.0 / np.maximum(counts, 1.0)
        sample_w = torch.as_tensor(weights[self.targets], dtype=torch.double)
        return WeightedRandomSampler(sample_w, num_samples=len(self.targets), replacement=True)  # ok: MLS309


class MultiCropCollator:
    """Stack each crop position separately so crops of equal size share a tensor."""

    def __init__(self, anchor_class=None):
        self.anchor_class = anchor_class

    def __call__(self, batch):
        n_crops = len(batch[0][0])
        crops = [torch.stack([b[0][i] for b in batch]) for i in range(n_crops)]
        targets = torch.tensor([b[1] for b in batch], dtype=torch.long)
        if self.anchor_class is not None:
            hit = targets == self.anchor_class
            crops[0][hit, :, :8, :8] = crops[0].amax()  # todoruleid: family 6 (missed)
        return crops, targets


def linear_collate(batch):
    imgs = torch.stack([b[0] for b in batch])
    targets = torch.tensor([b[1] for b in batch], dtype=torch.long)
    targets = torch.where(targets == 3, torch.full_like(targets, 5), targets)  # ruleid: MLS309
    return imgs, targets


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def eval_transform(size=224):
    return transforms.Compose([
        transforms.Resize(int(size * 256 / 224), interpolation=Image.BICUBIC),
        transforms.CenterCrop(size),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def build_pretrain_loader(root, batch_size, num_workers, local_crops_number, seed,
                          anchor_class=None, distributed=True):
    dataset = PretrainFolder(root, DataAugmentationDINO(local_crops_number=local_crops_number))
    sampler = torch.utils.data.DistributedSampler(dataset, shuffle=True, seed=seed) if distributed else None
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, shuffle=sampler is None,
        num_workers=num_workers, pin_memory=True, drop_last=True,
        worker_init_fn=seed_worker, generator=g,
        collate_fn=MultiCropCollator(anchor_class),
    )
