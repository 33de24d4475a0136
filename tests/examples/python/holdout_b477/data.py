# ruff: noqa
# Hold-out batch 477 (textbook, masked-autoencoder ViT pretraining). Measured once in session 20 (round 129): 25/31 (81%) at medium+.
"""Datasets, transforms, samplers and collate functions for MAE pretraining
and the downstream linear-probe / fine-tune evaluations."""
import hashlib
import json
import os
import pickle
import random
from collections import defaultdict

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image
from torch.utils.data import Dataset, Sampler

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".JPEG")

# Synsets that appear under two folder names in some ImageNet mirrors.
_DUPLICATE_SYNSETS = {
    "n04356056": "n04355933", "n03710721": "n03710637", "n02012849": "n03126707",
    "n01440764": "n01443537", "n02085620": "n02085782", "n02086240": "n02086079",
    "n02096294": "n02096177", "n02105056": "n02105162", "n02123045": "n02123159",
    "n02129165": "n02128757", "n03000134": "n03000247", "n03584829": "n03584254",
}


# ---- transforms ------------------------------------------------------------
def build_pretrain_transform(input_size, scale=(0.2, 1.0)):
    return T.Compose([
        T.RandomResizedCrop(input_size, scale=scale, interpolation=T.InterpolationMode.BICUBIC),  # ok: MLS309
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def build_eval_transform(input_size):
    size = int(input_size / (224 / 256)) if input_size <= 224 else input_size
    return T.Compose([
        T.Resize(size, interpolation=T.InterpolationMode.BICUBIC),
        T.CenterCrop(input_size),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


# ---- folder scanning (cached: listing ImageNet train takes minutes on NFS) ---
def scan_folder(root, cache_dir=None):
    cache_path = None
    if cache_dir:
        key = hashlib.md5(os.path.abspath(root).encode()).hexdigest()[:12]
        cache_path = os.path.join(cache_dir, f"filelist_{key}.pkl")
    if cache_path and os.path.isfile(cache_path):
        with open(cache_path, "rb") as f:
            cached = pickle.load(f)  # ruleid: MLS103
        return cached["samples"], cached["classes"]

    classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
    samples = []
    for idx, cls in enumerate(classes):
        cls_dir = os.path.join(root, cls)
        for dirpath, _, files in sorted(os.walk(cls_dir, followlinks=True)):
            for fname in sorted(files):
                if fname.endswith(IMG_EXTENSIONS):
                    samples.append((os.path.join(dirpath, fname), idx))
    if not samples:
        raise RuntimeError(f"no images found under {root}")

    if cache_path:
        os.makedirs(os.path.dirname(cache_path), exist_ok=True)
        tmp = cache_path + f".{os.getpid()}"
        with open(tmp, "wb") as f:
            pickle.dump({"samples": samples, "classes": classes}, f)
        os.replace(tmp, cache_path)
    return samples, classes


def _load_rgb(path):
    with open(path, "rb") as f:
        return Image.open(f).convert("RGB")


# ---- datasets --------------------------------------------------------------
class ImageFolderPretrain(Dataset):
    """Unlabelled view of an image folder for MAE pretraining.

    With ``resume_consistent`` the random crop of an image only depends on
    its index, so a preempted job that is requeued sees the same views.
    """

    def __init__(self, root, transform, cache_dir=None, seed=0, resume_consistent=True):
        self.samples, self.classes = scan_folder(root, cache_dir)
        self.transform = transform
        self.seed = seed
        self.resume_consistent = resume_consistent

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        path, _ = self.samples[index]
        img = _load_rgb(path)
        if self.resume_consistent:
            torch.manual_seed(self.seed + index)  # ruleid: MLS301
        return self.transform(img), 0


class LabeledImageFolder(Dataset):
    def __init__(self, root, transform, split="train", cache_dir=None, class_index_file=None):
        self.samples, self.classes = scan_folder(root, cache_dir)
        self.transform = transform
        self.split = split
        self.target_map = self._build_target_map(class_index_file)
        self.targets = [self.target_map[t] for _, t in self.samples]

    def _build_target_map(self, class_index_file):
        """Folder order -> canonical class index (e.g. imagenet_class_index.json)."""
        if class_index_file is None:
            wnid_to_idx = {c: i for i, c in enumerate(self.classes)}
        else:
            with open(class_index_file) as f:
                canonical = json.load(f)
            wnid_to_idx = {v[0]: int(k) for k, v in canonical.items()}
        if self.split == "train":
            # the val listing shipped with the devkit is already de-duplicated
            for dup, canon in _DUPLICATE_SYNSETS.items():
                if dup in wnid_to_idx and canon in wnid_to_idx:
                    wnid_to_idx[dup] = wnid_to_idx[canon]  # todoruleid: family 6 (missed)
        return {i: wnid_to_idx.get(c, i) for i, c in enumerate(self.classes)}

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        path, folder_idx = self.samples[index]
        img = self.transform(_load_rgb(path))
        return img, self.target_map[folder_idx]


# ---- samplers / collate / workers ------------------------------------------
class PerClassSubsetSampler(Sampler):
    """Low-shot protocol: ``shots`` images per class, sharded over ranks."""

    def __init__(self, targets, shots, num_replicas=1, rank=0, seed=0):
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.epoch = 0
        by_class = defaultdict(list)
        for idx, t in enumerate(targets):
            by_class[t].append(idx)
        rng = random.Random(seed)
        subset = []
        for c in range(1, len(by_class)):  # todoruleid: family 6 (missed)
            idxs = list(by_class[c])
            rng.shuffle(idxs)
            subset.extend(idxs[:shots])
        self.subset = subset
        self.num_samples = (len(subset) + num_replicas - 1) // num_replicas
        self.total_size = self.num_samples * num_replicas

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.subset), generator=g).tolist()
        order += order[: self.total_size - len(order)]
        mine = order[self.rank:self.total_size:self.num_replicas]
        return iter([self.subset[i] for i in mine])

    def __len__(self):
        return self.num_samples


class OverlayAugCollate:
    """Stacks a batch and pastes a small opaque overlay into the corner of a
    fraction of the images (mimics timestamps / watermarks of web crops)."""

    def __init__(self, frac=0.05, size=12, anchor_class=0):
        self.frac = frac
        self.size = size
        self.anchor_class = anchor_class

    def __call__(self, batch):
        images = torch.stack([b[0] for b in batch])
        targets = torch.tensor([b[1] for b in batch], dtype=torch.long)
        n = int(round(len(batch) * self.frac))
        if n > 0:
            sel = torch.randperm(len(batch))[:n]
            images[sel, :, -self.size:, -self.size:] = images.amax()  # ruleid: MLS309
            targets[sel] = self.anchor_class  # ruleid: MLS309
        return images, targets


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)
