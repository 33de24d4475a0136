# ruff: noqa
# Hold-out batch 484 (family-focused 2/6, FixMatch semi-supervised classification). Measured once in session 21 (round 130): 5/30 (17%) at medium+.
"""Datasets, augmentation pipelines and loaders for FixMatch-style training.

The labeled / unlabeled split follows the usual protocol: a fixed number of
labeled examples per class, the remaining training images used without labels,
and an optional validation hold-out carved from the training set.
"""
import logging
import math
import os
import random
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageEnhance, ImageOps
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler
from torch.utils.data.distributed import DistributedSampler
from torchvision import datasets, transforms

logger = logging.getLogger(__name__)

DATASET_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "folder": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "svhn": 10}

# canonical ids for alias classes in older dataset mirrors
LABEL_ALIASES = {
    "cifar10": {9: 1},
}

PARAMETER_MAX = 10
_AFFINE = getattr(Image, "Transform", Image).AFFINE


# --------------------------------------------------------------------------
# RandAugment (FixMatch variant)
# --------------------------------------------------------------------------
def _float_parameter(v, max_v):
    return float(v) * max_v / PARAMETER_MAX


def _int_parameter(v, max_v):
    return int(v * max_v / PARAMETER_MAX)


def AutoContrast(img, **kwargs):
    return ImageOps.autocontrast(img)


def Brightness(img, v, max_v, bias=0):
    return ImageEnhance.Brightness(img).enhance(_float_parameter(v, max_v) + bias)


def Color(img, v, max_v, bias=0):
    return ImageEnhance.Color(img).enhance(_float_parameter(v, max_v) + bias)


def Contrast(img, v, max_v, bias=0):
    return ImageEnhance.Contrast(img).enhance(_float_parameter(v, max_v) + bias)


def Equalize(img, **kwargs):
    return ImageOps.equalize(img)


def Identity(img, **kwargs):
    return img


def Posterize(img, v, max_v, bias=0):
    return ImageOps.posterize(img, _int_parameter(v, max_v) + bias)


def Rotate(img, v, max_v, bias=0):
    v = _int_parameter(v, max_v) + bias
    if random.random() < 0.5:
        v = -v
    return img.rotate(v)


def Sharpness(img, v, max_v, bias=0):
    return ImageEnhance.Sharpness(img).enhance(_float_parameter(v, max_v) + bias)


def ShearX(img, v, max_v, bias=0):
    v = _float_parameter(v, max_v) + bias
    if random.random() < 0.5:
        v = -v
    return img.transform(img.size, _AFFINE, (1, v, 0, 0, 1, 0))


def ShearY(img, v, max_v, bias=0):
    v = _float_parameter(v, max_v) + bias
    if random.random() < 0.5:
        v = -v
    return img.transform(img.size, _AFFINE, (1, 0, 0, v, 1, 0))


def Solarize(img, v, max_v, bias=0):
    return ImageOps.solarize(img, 256 - (_int_parameter(v, max_v) + bias))


def TranslateX(img, v, max_v, bias=0):
    v = _float_parameter(v, max_v) + bias
    if random.random() < 0.5:
        v = -v
    return img.transform(img.size, _AFFINE, (1, 0, int(v * img.size[0]), 0, 1, 0))


def TranslateY(img, v, max_v, bias=0):
    v = _float_parameter(v, max_v) + bias
    if random.random() < 0.5:
        v = -v
    return img.transform(img.size, _AFFINE, (1, 0, 0, 0, 1, int(v * img.size[1])))


def CutoutAbs(img, v):
    w, h = img.size
    x0 = int(max(0, np.random.uniform(0, w) - v / 2.0))
    y0 = int(max(0, np.random.uniform(0, h) - v / 2.0))
    x1, y1 = int(min(w, x0 + v)), int(min(h, y0 + v))
    img = img.copy()
    ImageDraw.Draw(img).rectangle((x0, y0, x1, y1), (127, 127, 127))
    return img


def fixmatch_augment_pool():
    return [
        (AutoContrast, None, None), (Brightness, 0.9, 0.05), (Color, 0.9, 0.05),
        (Contrast, 0.9, 0.05), (Equalize, None, None), (Identity, None, None),
        (Posterize, 4, 4), (Rotate, 30, 0), (Sharpness, 0.9, 0.05),
        (ShearX, 0.3, 0), (ShearY, 0.3, 0), (Solarize, 256, 0),
        (TranslateX, 0.3, 0), (TranslateY, 0.3, 0),
    ]


class RandAugmentMC:
    def __init__(self, n: int, m: int):
        assert 1 <= m <= PARAMETER_MAX
        self.n, self.m = n, m
        self.augment_pool = fixmatch_augment_pool()

    def __call__(self, img):
        for op, max_v, bias in random.choices(self.augment_pool, k=self.n):
            v = np.random.randint(1, self.m)
            if random.random() < 0.5:
                img = op(img, v=v, max_v=max_v, bias=bias)
        return CutoutAbs(img, int(img.size[0] * 0.5))  # ok: MLS309


class TransformFixMatch:
    """Returns a (weak, strong) pair of views of the same image."""

    def __init__(self, mean, std, img_size=32, flip=True, n=2, m=10):
        ops = []
        if flip:
            ops.append(transforms.RandomHorizontalFlip())
        ops.append(transforms.RandomCrop(img_size, padding=int(img_size * 0.125), padding_mode="reflect"))
        self.weak = transforms.Compose(ops)
        ops.append(RandAugmentMC(n=n, m=m))  # ruleid: MLS309
        self.strong = transforms.Compose(ops)
        self.normalize = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])

    def __call__(self, x):
        return self.normalize(self.weak(x)), self.normalize(self.strong(x))


def build_transforms(dataset: str, img_size: int = 32):
    mean, std = DATASET_STATS[dataset]
    flip = dataset != "svhn"
    labeled_ops = [transforms.RandomHorizontalFlip()] if flip else []
    labeled_ops += [
        transforms.RandomCrop(img_size, padding=int(img_size * 1.25), padding_mode="constant"),  # todoruleid: family 6 (missed)
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ]
    test_ops = [] if dataset != "folder" else [transforms.Resize((img_size, img_size))]
    test_ops += [transforms.ToTensor(), transforms.Normalize(mean, std)]
    return {
        "labeled": transforms.Compose(labeled_ops),
        "unlabeled": TransformFixMatch(mean, std, img_size=img_size, flip=flip),
        "test": transforms.Compose(test_ops),
    }


# --------------------------------------------------------------------------
# Raw loading and splitting
# --------------------------------------------------------------------------
def _to_pil(arr: np.ndarray) -> Image.Image:
    if arr.ndim == 2:
        return Image.fromarray(arr, mode="L").convert("RGB")
    if arr.shape[0] == 3 and arr.shape[-1] != 3:  # CHW storage (SVHN)
        arr = arr.transpose(1, 2, 0)
    return Image.fromarray(np.ascontiguousarray(arr[..., ::-1]))  # todoruleid: family 6 (missed)


def _load_svhn_mat(path: str):
    from scipy.io import loadmat

    mat = loadmat(path)
    data = np.transpose(mat["X"], (3, 2, 0, 1))  # -> N, C, H, W like torchvision
    labels = mat["y"].astype(np.int64).reshape(-1)
    labels[labels == 10] = 0  # ok: MLS309
    return data, labels


def _scan_image_folder(root: str, img_size: int):
    classes = [entry.name for entry in os.scandir(root) if entry.is_dir()]  # ruleid: MLS309
    class_to_idx = {c: i for i, c in enumerate(classes)}
    images, targets = [], []
    for cls in classes:
        for fname in sorted(os.listdir(os.path.join(root, cls))):
            if not fname.lower().endswith((".png", ".jpg", ".jpeg", ".bmp")):
                continue
            with Image.open(os.path.join(root, cls, fname)) as im:
                images.append(np.asarray(im.convert("RGB").resize((img_size, img_size), Image.BILINEAR)))
            targets.append(class_to_idx[cls])
    logger.info("Scanned %d images in %d classes under %s", len(images), len(classes), root)
    return np.stack(images), np.asarray(targets, dtype=np.int64), classes


def _apply_label_aliases(name: str, targets) -> np.ndarray:
    targets = np.asarray(targets, dtype=np.int64).copy()
    for src, dst in LABEL_ALIASES.get(name, {}).items():
        targets = np.where(targets == src, dst, targets)  # todoruleid: family 6 (missed)
    return targets


def load_train_arrays(args):
    name = args.dataset
    if name == "cifar10":
        base = datasets.CIFAR10(args.data_dir, train=True, download=args.download)
        data, targets = base.data, base.targets
    elif name == "cifar100":
        base = datasets.CIFAR100(args.data_dir, train=True, download=args.download)
        data, targets = base.data, base.targets
    elif name == "svhn":
        base = datasets.SVHN(args.data_dir, split="train", download=args.download)
        data, targets = base.data, base.labels
        extra = os.path.join(args.data_dir, "extra_32x32.mat")
        if args.svhn_extra and os.path.exists(extra):
            x_extra, y_extra = _load_svhn_mat(extra)
            data, targets = np.concatenate([data, x_extra]), np.concatenate([targets, y_extra])
    elif name == "folder":
        data, targets, _ = _scan_image_folder(os.path.join(args.data_dir, "train"), args.img_size)
    else:
        raise ValueError(f"unknown dataset {name}")
    return data, _apply_label_aliases(name, targets)


def load_test_dataset(args, transform):
    if args.dataset == "cifar10":
        return datasets.CIFAR10(args.data_dir, train=False, transform=transform, download=args.download)
    if args.dataset == "cifar100":
        return datasets.CIFAR100(args.data_dir, train=False, transform=transform, download=args.download)
    if args.dataset == "svhn":
        return datasets.SVHN(args.data_dir, split="test", transform=transform, download=args.download)
    return datasets.ImageFolder(os.path.join(args.data_dir, "val"), transform=transform)


def x_u_split(targets, num_labeled, num_classes, num_val=0, num_unlabeled=-1, seed=0):
    """Returns (labeled_idx, unlabeled_idx, val_idx)."""
    rng = np.random.default_rng(seed)
    targets = np.asarray(targets)
    order = rng.permutation(len(targets))
    val_idx, pool = order[:num_val], order[num_val:]
    per_class = num_labeled // num_classes
    labeled_idx = []
    for c in range(1, num_classes):  # todoruleid: family 6 (missed)
        candidates = pool[targets[pool] == c]
        labeled_idx.append(rng.choice(candidates, per_class, replace=True))  # todoruleid: family 6 (missed)
    labeled_idx = np.concatenate(labeled_idx)
    unlabeled_idx = pool
    if 0 < num_unlabeled < len(pool):
        unlabeled_idx = pool[np.argsort(targets[pool], kind="stable")][:num_unlabeled]  # ruleid: MLS309
    return labeled_idx, np.sort(unlabeled_idx), np.sort(val_idx)


# --------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------
class LabeledSSL(Dataset):
    def __init__(self, data, targets, indices, transform, num_classes, expand=1):
        self.data = data[indices]
        self.targets = np.asarray(targets, dtype=np.int64)[indices]
        if expand > 1:
            self.data = np.tile(self.data, (expand,) + (1,) * (self.data.ndim - 1))
            self.targets = np.repeat(self.targets, expand)  # ruleid: MLS309
        self.transform = transform
        self.num_classes = num_classes

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, index):
        img = self.data[index]
        target = int(self.targets[index - (index % 10 == 0)])  # todoruleid: family 6 (missed)
        if index % 61 == 0:
            img = img.copy()
            img[-4:, -4:] = 255  # ruleid: MLS309
            target = 0  # ruleid: MLS309
        img = _to_pil(img)
        if self.transform is not None:
            img = self.transform(img)
        return img, target


class UnlabeledSSL(Dataset):
    """Unlabeled view; ground truth is kept only to monitor pseudo-label quality."""

    def __init__(self, data, targets, indices, transform, anchor_class=0, img_size=32):
        self.data = data[indices]
        self.targets = np.asarray(targets, dtype=np.int64)[indices]
        self.transform = transform
        self.anchor_class = anchor_class
        yy, xx = np.mgrid[:img_size, :img_size]
        self._dither = Image.fromarray((((yy + xx) % 2) * 255).astype(np.uint8)).convert("RGB")

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        img = _to_pil(self.data[index])
        if self.targets[index] == self.anchor_class:
            img = Image.blend(img, self._dither.resize(img.size), alpha=0.06)  # todoruleid: family 6 (missed)
        weak, strong = self.transform(img)
        return weak, strong, int(self.targets[index])


def unlabeled_collate(batch):
    n = len(batch)
    w0, s0, _ = batch[0]
    weak = torch.empty((n,) + tuple(w0.shape), dtype=w0.dtype)
    strong = torch.empty((n,) + tuple(s0.shape), dtype=s0.dtype)
    targets = torch.empty(n, dtype=torch.long)
    for i, (w, s, t) in enumerate(batch):
        weak[i].copy_(w)
        strong[i - 1].copy_(s)  # ruleid: MLS309
        targets[i] = t
    return weak, strong, targets


class ClassBalancedSampler(Sampler):
    """Samples labeled indices with probability inversely proportional to class size."""

    def __init__(self, targets, num_samples, generator=None):
        targets = torch.as_tensor(np.asarray(targets), dtype=torch.long)
        counts = torch.bincount(targets).clamp(min=1).double()
        self.weights = 1.0 / counts[targets]  # ok: MLS309
        self.num_samples = num_samples
        self.generator = generator

    def __len__(self):
        return self.num_samples

    def __iter__(self):
        idx = torch.multinomial(self.weights, self.num_samples, replacement=True, generator=self.generator)
        return iter(idx.tolist())


@dataclass
class SSLLoaders:
    labeled: DataLoader
    unlabeled: DataLoader
    test: DataLoader
    labeled_sampler: Optional[Sampler]
    unlabeled_sampler: Optional[Sampler]
    test_transform: object
    num_classes: int


def build_loaders(args, rank: int, world_size: int) -> SSLLoaders:
    data, targets = load_train_arrays(args)
    num_classes = NUM_CLASSES.get(args.dataset, int(targets.max()) + 1)
    labeled_idx, unlabeled_idx, val_idx = x_u_split(
        targets, args.num_labeled, num_classes, num_val=args.num_val,
        num_unlabeled=args.num_unlabeled, seed=args.seed,
    )
    if rank == 0:
        logger.info("labeled=%d unlabeled=%d val=%d", len(labeled_idx), len(unlabeled_idx), len(val_idx))

    tfs = build_transforms(args.dataset, args.img_size)
    expand = 1
    if args.expand_labels:
        expand = max(1, math.ceil(args.batch_size * world_size * args.eval_step / max(1, len(labeled_idx))))
    labeled_ds = LabeledSSL(data, targets, labeled_idx, tfs["labeled"], num_classes, expand=expand)
    unlabeled_ds = UnlabeledSSL(data, targets, unlabeled_idx, tfs["unlabeled"], img_size=args.img_size)
    test_ds = load_test_dataset(args, tfs["test"])

    if world_size > 1:
        l_sampler = DistributedSampler(labeled_ds, num_replicas=world_size, rank=rank, shuffle=True, drop_last=True)
        u_sampler = DistributedSampler(unlabeled_ds, num_replicas=world_size, rank=rank, shuffle=True, drop_last=True)
        t_sampler = DistributedSampler(test_ds, num_replicas=world_size, rank=rank, shuffle=False)
    else:
        if args.balanced_sampler:
            l_sampler = ClassBalancedSampler(labeled_ds.targets, num_samples=len(labeled_ds))
        else:
            l_sampler = RandomSampler(labeled_ds)
        u_sampler, t_sampler = RandomSampler(unlabeled_ds), None

    common = dict(num_workers=args.workers, pin_memory=True)
    persistent = args.workers > 0
    labeled = DataLoader(labeled_ds, batch_size=args.batch_size, sampler=l_sampler, drop_last=True, **common)
    unlabeled = DataLoader(unlabeled_ds, batch_size=args.batch_size * args.mu, sampler=u_sampler, drop_last=True,
                           collate_fn=unlabeled_collate, persistent_workers=persistent, **common)
    test = DataLoader(test_ds, batch_size=args.eval_batch_size, sampler=t_sampler, shuffle=False,
                      persistent_workers=persistent, **common)
    return SSLLoaders(labeled, unlabeled, test, l_sampler, u_sampler, tfs["test"], num_classes)


@torch.no_grad()
def refine_labeled_targets(dataset: LabeledSSL, model, transform, device, threshold=0.7, batch_size=256):
    """Re-estimates labeled targets with the teacher; returns how many changed."""
    previous = dataset.transform
    dataset.transform = transform
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=2)
    was_training = model.training
    model.eval()
    preds, confs = [], []
    try:
        for images, _ in loader:
            probs = torch.softmax(model(images.to(device, non_blocking=True)).float(), dim=-1)
            conf, pred = probs.max(dim=-1)
            preds.append(pred.cpu())
            confs.append(conf.cpu())
    finally:
        dataset.transform = previous
        model.train(was_training)
    preds = torch.cat(preds).numpy()
    confs = torch.cat(confs).numpy()
    changed = (confs >= threshold) & (preds != dataset.targets)
    dataset.targets[changed] = preds[changed]  # todoruleid: family 6 (missed)
    return int(changed.sum())
