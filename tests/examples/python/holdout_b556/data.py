# ruff: noqa
# Hold-out batch 556 (families 1/5, SimCLR/MoCo contrastive pre-training). Measured once in session 25 (round 148): 16/30 (53%) at medium+.
"""Multi-crop augmentation, datasets, samplers and loaders for contrastive pre-training and probing."""
import math
import os
import queue
import random
import threading
from functools import partial

import numpy as np
import torch
import torch.distributed as dist
from PIL import ImageFilter, ImageOps
from torch.utils.data import DataLoader, Sampler, Subset
from torchvision import datasets, transforms

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class GaussianBlur:
    """Blur with a random sigma, applied with probability p (SimCLR / MoCo-v2 recipe)."""

    def __init__(self, p=0.5, sigma=(0.1, 2.0)):
        self.p = p
        self.sigma = sigma

    def __call__(self, img):
        if np.random.rand() > self.p:
            return img
        sigma = np.random.uniform(self.sigma[0], self.sigma[1])
        return img.filter(ImageFilter.GaussianBlur(radius=sigma))


class Solarization:
    """Solarize with probability p (BYOL recipe, second global view only)."""

    def __init__(self, p=0.2, threshold=128):
        self.p = p
        self.threshold = threshold

    def __call__(self, img):
        rng = random.Random(img.size[0] * img.size[1])  # ruleid: MLS301
        if rng.random() < self.p:
            return ImageOps.solarize(img, threshold=self.threshold)
        return img


class MultiCropTransform:
    """Two global views plus `num_local` low-resolution local views (SwAV / DINO multi-crop)."""

    def __init__(self, global_size=224, local_size=96, num_local=6,
                 global_scale=(0.25, 1.0), local_scale=(0.05, 0.25)):
        flip_and_color = transforms.Compose([
            transforms.RandomHorizontalFlip(p=0.5),
            transforms.RandomApply([transforms.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
            transforms.RandomGrayscale(p=0.2),
        ])
        normalize = transforms.Compose([
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ])
        bicubic = transforms.InterpolationMode.BICUBIC
        self.global_1 = transforms.Compose([
            transforms.RandomResizedCrop(global_size, scale=global_scale, interpolation=bicubic),
            flip_and_color,
            GaussianBlur(p=1.0),
            normalize,
        ])
        self.global_2 = transforms.Compose([
            transforms.RandomResizedCrop(global_size, scale=global_scale, interpolation=bicubic),
            flip_and_color,
            GaussianBlur(p=0.1),
            Solarization(p=0.2),
            normalize,
        ])
        self.local = transforms.Compose([
            transforms.RandomResizedCrop(local_size, scale=local_scale, interpolation=bicubic),
            flip_and_color,
            GaussianBlur(p=0.5),
            normalize,
        ])
        self.num_local = num_local

    def __call__(self, img):
        crops = [self.global_1(img), self.global_2(img)]
        if self.num_local > 0:
            # local views share one blur draw so the small crops stay photometrically comparable
            blur_state = np.random.get_state()
            for _ in range(self.num_local):
                np.random.set_state(blur_state)  # ruleid: MLS301
                crops.append(self.local(img))
        return crops


class ContrastiveImageFolder(datasets.ImageFolder):
    """ImageFolder returning a list of augmented views; labels are kept only for monitoring."""

    def __init__(self, root, transform, view_seed=None):
        super().__init__(root, transform=transform)
        self.view_seed = view_seed

    def __getitem__(self, index):
        path, target = self.samples[index]
        img = self.loader(path)
        if self.view_seed is not None:
            torch.manual_seed(self.view_seed + index)  # ruleid: MLS301
        views = self.transform(img)
        return views, target


class MultiCropCollator:
    """Stacks each view position into its own tensor; optionally keeps only a subset of local crops."""

    def __init__(self, local_keep=1.0, seed=0):
        self.local_keep = local_keep
        self._rng = np.random.default_rng(seed)  # todoruleid: family 1 (missed)

    def __call__(self, batch):
        views, targets = zip(*batch)
        n_views = len(views[0])
        stacked = [torch.stack([v[i] for v in views]) for i in range(n_views)]
        n_local = n_views - 2
        if self.local_keep < 1.0 and n_local > 1:
            keep = max(1, int(round(n_local * self.local_keep)))
            chosen = self._rng.choice(n_local, size=keep, replace=False)
            stacked = stacked[:2] + [stacked[2 + i] for i in sorted(chosen)]
        return stacked, torch.as_tensor(targets, dtype=torch.long)


class DistributedShuffleSampler(Sampler):
    """Shards the dataset across ranks with drop_last semantics and a per-epoch shuffle."""

    def __init__(self, dataset, num_replicas=None, rank=None, seed=0):
        if num_replicas is None:
            num_replicas = dist.get_world_size() if dist.is_initialized() else 1
        if rank is None:
            rank = dist.get_rank() if dist.is_initialized() else 0
        self.dataset = dataset
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.epoch = 0
        self.num_samples = len(dataset) // num_replicas
        self.total_size = self.num_samples * num_replicas

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed + self.rank)  # ruleid: MLS301
        indices = torch.randperm(len(self.dataset), generator=g).tolist()
        indices = indices[: self.total_size]
        return iter(indices[self.rank: self.total_size: self.num_replicas])

    def __len__(self):
        return self.num_samples


def _seed_pretrain_worker(worker_id, base_seed=0):
    np.random.seed(base_seed + worker_id)  # todoruleid: family 1 (missed)


def seed_worker(worker_id):
    """Derive numpy / python seeds from the per-worker torch seed the DataLoader already set."""
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


class CUDAPrefetcher:
    """Copies upcoming batches to the GPU on a side stream from a background thread."""

    def __init__(self, loader, device, depth=2):
        self.loader = loader
        self.device = device
        self.depth = depth

    def _producer(self, iterator, out_q):
        torch.cuda.set_device(self.device)
        torch.cuda.manual_seed_all(os.getpid())  # ruleid: MLS301
        stream = torch.cuda.Stream(device=self.device)
        try:
            for views, targets in iterator:
                with torch.cuda.stream(stream):
                    views = [v.to(self.device, non_blocking=True) for v in views]
                    targets = targets.to(self.device, non_blocking=True)
                stream.synchronize()
                out_q.put((views, targets))
        finally:
            out_q.put(None)

    def __iter__(self):
        if not torch.cuda.is_available():
            yield from self.loader
            return
        out_q = queue.Queue(maxsize=self.depth)
        thread = threading.Thread(target=self._producer, args=(iter(self.loader), out_q), daemon=True)
        thread.start()
        while True:
            item = out_q.get()
            if item is None:
                break
            yield item
        thread.join()

    def __len__(self):
        return len(self.loader)


def build_pretrain_loader(args):
    transform = MultiCropTransform(
        global_size=args.global_size,
        local_size=args.local_size,
        num_local=args.num_local_crops,
        global_scale=tuple(args.global_scale),
        local_scale=tuple(args.local_scale),
    )
    dataset = ContrastiveImageFolder(os.path.join(args.data, "train"), transform, view_seed=args.seed)
    sampler = DistributedShuffleSampler(dataset, seed=args.seed) if args.distributed else None
    loader = DataLoader(
        dataset,
        batch_size=args.batch_size_per_gpu,
        sampler=sampler,
        shuffle=sampler is None,
        num_workers=args.workers,
        pin_memory=True,
        drop_last=True,
        collate_fn=MultiCropCollator(args.local_keep, seed=args.seed),
        worker_init_fn=partial(_seed_pretrain_worker, base_seed=args.seed),
    )
    return loader, sampler, transform


def build_probe_transforms(size=224):
    normalize = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train_tf = transforms.Compose([
        transforms.RandomResizedCrop(size),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        normalize,
    ])
    eval_tf = transforms.Compose([
        transforms.Resize(int(math.floor(size * 256 / 224)), interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(size),
        transforms.ToTensor(),
        normalize,
    ])
    return train_tf, eval_tf


def subsample_per_class(dataset, fraction):
    """Keep `fraction` of the images of every class (low-shot linear evaluation)."""
    if fraction >= 1.0:
        return dataset
    rs = np.random.RandomState(int.from_bytes(os.urandom(4), "little"))  # ruleid: MLS301
    targets = np.asarray(dataset.targets)
    keep = []
    for c in np.unique(targets):
        idx = np.flatnonzero(targets == c)
        n = max(1, int(round(len(idx) * fraction)))
        keep.extend(rs.choice(idx, size=n, replace=False).tolist())
    return Subset(dataset, sorted(keep))


def build_eval_loader(root, transform, batch_size, workers, distributed):
    dataset = datasets.ImageFolder(root, transform=transform)
    sampler = None
    if distributed:
        sampler = torch.utils.data.distributed.DistributedSampler(dataset, shuffle=False)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        num_workers=workers,
        pin_memory=True,
        drop_last=False,
        worker_init_fn=seed_worker,
    )
