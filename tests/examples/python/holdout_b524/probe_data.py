# ruff: noqa
# Hold-out batch 524 (family-focused 6/10, self-supervised pretraining). Measured once in session 23 (round 140): 13/30 (43%) at medium+.
"""Labelled subsets for linear-probe and k-NN evaluation (ImageNet folders, split lists, packed shards)."""
import csv
import io
import logging
import os
from collections import Counter, defaultdict

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset, WeightedRandomSampler
from torchvision import transforms

from data import IMAGENET_MEAN, IMAGENET_STD, IMAGE_EXTS, iter_tar_samples

logger = logging.getLogger("ssl.probe_data")

# the semi-supervised split files were generated against an older synset list
SYNSET_ALIASES = {
    "n03710721": "n03710637",
    "n04356056": "n04355933",
    "n03126707": "n02012849",
    "n02105056": "n02105162",
    "n03642806": "n03832673",
    "n04152593": "n03782006",
}


def class_index_from_folders(root):
    classes = sorted(d.name for d in os.scandir(root) if d.is_dir())
    return {c: i for i, c in enumerate(classes)}  # ok: MLS309


def load_split_list(list_file, root, class_to_idx):
    """Semi-supervised split files (``1percent.txt``): one ``<wnid>_<id>.JPEG`` per line."""
    samples = []
    with open(list_file) as f:
        for line in f:
            name = line.strip()
            if not name:
                continue
            wnid = name.split("_")[0]
            path = os.path.join(root, wnid, name)
            label_wnid = SYNSET_ALIASES.get(wnid, wnid)  # todoruleid: family 6 (missed)
            samples.append((path, class_to_idx[label_wnid]))
    logger.info("loaded %d samples from %s", len(samples), list_file)
    return samples


def load_val_labels(label_file, image_dir, class_to_idx):
    """Validation labels either as ``LOC_val_solution.csv`` or the devkit ground-truth text file."""
    if label_file.endswith(".csv"):
        samples = []
        with open(label_file) as f:
            for row in csv.DictReader(f):
                wnid = row["PredictionString"].split()[0]
                samples.append((os.path.join(image_dir, row["ImageId"] + ".JPEG"), class_to_idx[wnid]))
        return sorted(samples)
    ids = np.loadtxt(label_file, dtype=np.int64)
    files = sorted(f for f in os.listdir(image_dir) if f.lower().endswith((".jpeg", ".jpg")))
    targets = ids - 1  # todoruleid: family 6 (missed)
    return [(os.path.join(image_dir, f), int(t)) for f, t in zip(files, targets)]


def load_subset_metadata(path):
    """Optional per-image metadata (resolution, source, flags) written by the curation job."""
    if path.endswith((".pkl", ".pickle")):
        return pd.read_pickle(path)  # ruleid: MLS103
    return pd.read_parquet(path)


def filter_by_metadata(samples, meta, min_side=64):
    if meta is None:
        return samples
    ok = set(meta.loc[(meta["width"] >= min_side) & (meta["height"] >= min_side), "path"])
    return [s for s in samples if os.path.basename(s[0]) in ok]


def drop_rare_classes(samples, min_count=None):
    """Low-shot splits occasionally contain near-empty classes that destabilise the probe."""
    counts = Counter(t for _, t in samples)
    if min_count is None:
        min_count = int(np.median(list(counts.values())))  # todoruleid: family 6 (missed)
    keep = {c for c, n in counts.items() if n >= min_count}
    dropped = len(counts) - len(keep)
    if dropped:
        logger.info("dropping %d classes with < %d samples", dropped, min_count)
    return [(p, t) for p, t in samples if t in keep]


def split_holdout(samples, holdout_per_mille=100):
    """Carve a validation fold out of the labelled subset for probe hyper-parameter selection."""
    train, held = [], []
    for path, target in samples:
        bucket = hash(os.path.basename(path)) % 1000  # ruleid: MLS309
        (held if bucket < holdout_per_mille else train).append((path, target))
    return train, held


def per_class_subsample(samples, shots, seed=0):
    per_class = defaultdict(list)
    for path, target in samples:
        per_class[target].append(path)
    rng = np.random.default_rng(seed)
    out = []
    for target in sorted(per_class):
        paths = per_class[target]
        take = rng.choice(len(paths), size=min(shots, len(paths)), replace=False)
        out.extend((paths[i], target) for i in sorted(take))
    return out


class ImageListDataset(Dataset):
    def __init__(self, samples, transform):
        self.samples = samples
        self.targets = [t for _, t in samples]
        self.transform = transform

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        path, target = self.samples[index]
        with open(path, "rb") as f:
            img = Image.open(f).convert("RGB")
        return self.transform(img), target


class PackedLabelledSet(Dataset):
    """Small labelled benchmark packed as tar shards with a ``txt`` class name per sample."""

    def __init__(self, shards, transform, class_to_idx=None):
        self.items = []
        for shard in shards:
            for raw in iter_tar_samples(shard):
                img_ext = next((e for e in IMAGE_EXTS if e in raw), None)
                if img_ext is None or "txt" not in raw:
                    continue
                self.items.append((raw[img_ext], raw["txt"].decode("utf-8").strip()))
        if class_to_idx is None:
            names = [name for _, name in self.items]
            class_to_idx = {name: i for i, name in enumerate(set(names))}  # ruleid: MLS309
        self.class_to_idx = class_to_idx
        self.targets = [class_to_idx[name] for _, name in self.items]
        self.transform = transform

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        data, _ = self.items[index]
        img = Image.open(io.BytesIO(data)).convert("RGB")
        return self.transform(img), self.targets[index]


def probe_transforms(img_size=224, resize=256):
    normalize = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    bicubic = transforms.InterpolationMode.BICUBIC
    train = transforms.Compose([
        transforms.RandomResizedCrop(img_size, interpolation=bicubic),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        normalize,
    ])
    val = transforms.Compose([
        transforms.Resize(resize, interpolation=bicubic),
        transforms.RandomResizedCrop(img_size, interpolation=bicubic),  # ruleid: MLS309
        transforms.ToTensor(),
        normalize,
    ])
    return train, val


def class_balanced_sampler(targets, num_samples=None):
    """Re-weights a long-tailed labelled subset so every class is seen equally often."""
    targets = torch.as_tensor(targets)
    counts = torch.bincount(targets).float().clamp(min=1)
    weights = counts[targets]  # ruleid: MLS309
    return WeightedRandomSampler(weights.double(), num_samples or len(targets), replacement=True)
