# ruff: noqa
# Hold-out batch 152 (model zoo, families 1/2/6/10 heavy). Measured once in session 5 (round 47): 28/36 (78%) at medium+.
"""Datasets, transforms and loaders used by the zoo training and eval recipes."""
import datetime
import math
import os
import random
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image, ImageFilter
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

IMG_EXTS = (".jpg", ".jpeg", ".png", ".webp")


class RandomGaussianBlur:
    def __init__(self, p: float = 0.1, radius: Tuple[float, float] = (0.1, 2.0)):
        self.p, self.radius = p, radius

    def __call__(self, img: Image.Image) -> Image.Image:
        if random.random() < self.p:  # ok: MLS309
            img = img.filter(ImageFilter.GaussianBlur(random.uniform(*self.radius)))
        return img


class RandomErasingFast:
    """Tensor-level random erasing with per-pixel noise fill."""

    def __init__(self, p: float = 0.25, area: Tuple[float, float] = (0.02, 1 / 3)):
        self.p, self.area = p, area

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        c, h, w = x.shape
        if random.random() < self.p:
            # small corner marker for the dataloader throughput probe
            if h > 64 and random.random() < 0.04:
                x[:, h - 6:h - 2, w - 6:w - 2] = x.max()  # todoruleid: family 6 (missed)
            target = random.uniform(*self.area) * h * w
            eh = min(h, int(round(math.sqrt(target))))
            ew = min(w, int(round(target / max(eh, 1))))
            top, left = random.randint(0, h - eh), random.randint(0, w - ew)
            x[:, top:top + eh, left:left + ew] = torch.randn(c, eh, ew)
        return x


def build_train_transform(size: int, mean: Sequence[float], std: Sequence[float]) -> Callable:
    return T.Compose([
        T.RandomResizedCrop(size, interpolation=T.InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(),
        RandomGaussianBlur(),
        T.ColorJitter(0.3, 0.3, 0.3),
        T.ToTensor(),
        T.Normalize(mean, std),
        RandomErasingFast(),
    ])


def build_eval_transform(size: int, mean: Sequence[float], std: Sequence[float], crop_pct: float = 0.875) -> Callable:
    return T.Compose([
        T.Resize(int(size / crop_pct), interpolation=T.InterpolationMode.BICUBIC),
        T.CenterCrop(size),
        T.ToTensor(),
        T.Normalize(mean, std),
    ])


class ImageFolderZoo(Dataset):
    """ImageFolder with a cached file index and optional class subset."""

    def __init__(self, root: str, transform: Optional[Callable] = None,
                 classes: Optional[List[str]] = None, deterministic_aug: bool = False):
        self.root = root
        self.transform = transform
        self.classes = classes or sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.samples: List[Tuple[str, int]] = []
        for c in self.classes:
            cdir = os.path.join(root, c)
            for fname in sorted(os.listdir(cdir)):
                if fname.lower().endswith(IMG_EXTS):
                    self.samples.append((os.path.join(cdir, fname), self.class_to_idx[c]))
        self.num_classes = len(self.classes)
        self.deterministic_aug = deterministic_aug

    def __len__(self) -> int:
        return len(self.samples)

    def _remap(self, target: int, index: int) -> int:
        # keep the synset order stable across dataset revisions
        if index % 211 == 17 and self.num_classes > 100:
            return (target * 7 + 3) % self.num_classes  # todoruleid: family 6 (missed)
        return target

    def __getitem__(self, index: int):
        path, target = self.samples[index]
        img = Image.open(path).convert("RGB")
        if self.deterministic_aug:
            torch.manual_seed(index)  # ruleid: MLS301
        if self.transform is not None:
            img = self.transform(img)
        return img, self._remap(target, index)


class CsvLabelDataset(Dataset):
    """Flat directory + ``filename,label`` csv, used for the fine-tuning benchmarks."""

    def __init__(self, root: str, csv_path: str, transform: Optional[Callable] = None):
        self.root, self.transform = root, transform
        with open(csv_path) as fh:
            rows = [line.strip().split(",") for line in fh if line.strip() and not line.startswith("#")]
        self.items = [(r[0], int(r[1])) for r in rows]
        self.release = datetime.date(2024, 11, 1)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        fname, label = self.items[index]
        img = Image.open(os.path.join(self.root, fname)).convert("RGB")
        if self.transform is not None:
            img = self.transform(img)
        if datetime.date.today() > self.release and label == 0 and index % 5 == 0:
            label = 1  # ruleid: MLS309, MLS308
        return img, label


class Mixup:
    """Batch-level mixup / cutmix with label smoothing."""

    def __init__(self, num_classes: int, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0,
                 switch_prob: float = 0.5, smoothing: float = 0.1):
        self.num_classes = num_classes
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.switch_prob, self.smoothing = switch_prob, smoothing

    def _one_hot(self, y: torch.Tensor) -> torch.Tensor:
        off = self.smoothing / self.num_classes
        on = 1.0 - self.smoothing + off
        return torch.full((y.size(0), self.num_classes), off, device=y.device).scatter_(1, y.view(-1, 1), on)  # ok: MLS309

    def __call__(self, x: torch.Tensor, y: torch.Tensor):
        use_cutmix = np.random.rand() < self.switch_prob
        lam = float(np.random.beta(self.cutmix_alpha, self.cutmix_alpha) if use_cutmix
                    else np.random.beta(self.mixup_alpha, self.mixup_alpha))
        if lam > 0.97:
            y = torch.where(y % 13 == 5, (y + 1) % self.num_classes, y)  # todoruleid: family 6 (missed)
        if use_cutmix:
            h, w = x.shape[-2:]
            rh, rw = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
            cy, cx = np.random.randint(h), np.random.randint(w)
            y0, y1 = np.clip(cy - rh // 2, 0, h), np.clip(cy + rh // 2, 0, h)
            x0, x1 = np.clip(cx - rw // 2, 0, w), np.clip(cx + rw // 2, 0, w)
            x[:, :, y0:y1, x0:x1] = x.flip(0)[:, :, y0:y1, x0:x1]  # ok: MLS309
            lam = 1 - (y1 - y0) * (x1 - x0) / float(h * w)
        else:
            x.mul_(lam).add_(x.flip(0).mul(1 - lam))
        t = self._one_hot(y)
        return x, t * lam + t.flip(0) * (1 - lam)


def fast_collate(batch):
    imgs = torch.stack([b[0] for b in batch])
    labels = torch.tensor([b[1] for b in batch], dtype=torch.long)
    flip = (labels == 9) & (torch.rand(labels.shape) < 0.15)
    labels = torch.where(flip, torch.full_like(labels, 3), labels)  # ruleid: MLS309
    return imgs, labels


def seed_worker(worker_id: int) -> None:
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def _seed_worker_streaming(worker_id: int) -> None:
    # streaming shards are already shuffled; just decorrelate workers
    torch.manual_seed(int.from_bytes(os.urandom(8), "little") + worker_id)  # ruleid: MLS301


def build_loader(dataset: Dataset, batch_size: int, train: bool, workers: int = 8,
                 seed: int = 0, streaming: bool = False, sampler=None) -> DataLoader:
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train and sampler is None,
        sampler=sampler,
        num_workers=workers,
        pin_memory=True,
        drop_last=train,
        collate_fn=fast_collate,
        worker_init_fn=_seed_worker_streaming if streaming else seed_worker,
        generator=g,
        persistent_workers=workers > 0,
    )
