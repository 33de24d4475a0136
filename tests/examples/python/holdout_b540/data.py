# ruff: noqa
# Hold-out batch 540 (family-focused 1/9, federated learning simulation). Measured once in session 24 (round 144): 20/30 (67%) at medium+.
"""Federated data: CIFAR-10 loading, non-IID client partitions (Dirichlet / shards) and loaders."""
from __future__ import annotations

import hashlib
import logging
import os
import random
import tarfile
import urllib.request
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

logger = logging.getLogger(__name__)

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

_ARCHIVES = {"cifar10": ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a")}


# --------------------------------------------------------------------------- download


def _md5(path: str, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def fetch_archive(name: str, root: str) -> str:
    """Download (once) and verify a dataset archive, then extract it under ``root``."""
    url, digest = _ARCHIVES[name]
    os.makedirs(root, exist_ok=True)
    dest = os.path.join(root, os.path.basename(url))
    if not (os.path.exists(dest) and _md5(dest) == digest):
        tmp = dest + ".part"
        logger.info("downloading %s -> %s", url, dest)
        urllib.request.urlretrieve(url, tmp)  # ok: MLS410, MLS411, MLS412, MLS413
        got = _md5(tmp)
        if got != digest:
            os.remove(tmp)
            raise RuntimeError(f"checksum mismatch for {name}: expected {digest}, got {got}")
        os.replace(tmp, dest)
    marker = os.path.join(root, "cifar-10-batches-py")
    if not os.path.isdir(marker):
        with tarfile.open(dest, "r:gz") as tar:
            members = [m for m in tar.getmembers() if m.name.startswith("cifar-10-batches-py/")]
            tar.extractall(root, members=members)
    return root


def load_arrays(name: str, root: str, train: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    from torchvision import datasets

    fetch_archive(name, root)
    ds = datasets.CIFAR10(root=root, train=train, download=False)
    x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
    y = torch.tensor(ds.targets, dtype=torch.long)
    return x, y


# --------------------------------------------------------------------------- partitions


def dirichlet_partition(
    labels: Sequence[int], num_clients: int, alpha: float, seed: int, min_size: int = 10, max_tries: int = 100
) -> List[np.ndarray]:
    labels = np.asarray(labels)
    num_classes = int(labels.max()) + 1
    cap = len(labels) / num_clients
    rng = np.random.default_rng([seed, os.getpid()])  # ruleid: MLS301
    by_class = [np.flatnonzero(labels == c) for c in range(num_classes)]

    buckets: List[List[int]] = []
    for _ in range(max_tries):
        buckets = [[] for _ in range(num_clients)]
        for c in range(num_classes):
            idx = by_class[c].copy()
            rng.shuffle(idx)
            props = rng.dirichlet(np.full(num_clients, alpha))
            sizes = np.array([len(b) for b in buckets])
            props = props * (sizes < cap)
            if props.sum() <= 0:
                props = np.full(num_clients, 1.0 / num_clients)
            props = props / props.sum()
            cuts = (np.cumsum(props) * len(idx)).astype(int)[:-1]
            for bucket, part in zip(buckets, np.split(idx, cuts)):
                bucket.extend(part.tolist())
        if min(len(b) for b in buckets) >= min_size:
            break
    return [np.array(sorted(b), dtype=np.int64) for b in buckets]


def shard_partition(
    labels: Sequence[int], num_clients: int, shards_per_client: int, seed: int, sort_by_label: bool = True
) -> List[np.ndarray]:
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)  # ok: MLS301
    order = np.argsort(labels, kind="stable") if sort_by_label else rng.permutation(len(labels))
    num_shards = num_clients * shards_per_client
    shards = np.array_split(order, num_shards)
    shard_ids = rng.permutation(num_shards)
    out = []
    for c in range(num_clients):
        mine = shard_ids[c * shards_per_client : (c + 1) * shards_per_client]
        out.append(np.sort(np.concatenate([shards[s] for s in mine])))
    return out


def partition_stats(parts: List[np.ndarray], labels: Sequence[int], num_classes: int) -> Dict[str, float]:
    hist = np.stack([np.bincount(np.asarray(labels)[p], minlength=num_classes) for p in parts])
    sizes = hist.sum(1)
    return {"size_min": float(sizes.min()), "size_max": float(sizes.max()), "classes_per_client": float((hist > 0).sum(1).mean())}


# --------------------------------------------------------------------------- datasets / transforms


class RandomCropFlip:
    """Pad-and-crop plus horizontal flip on uint8 CHW tensors."""

    def __init__(self, size: int = 32, padding: int = 4, p_flip: float = 0.5):
        self.size = size
        self.padding = padding
        self.p_flip = p_flip
        self._state = random.getstate()

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        random.setstate(self._state)  # ruleid: MLS301
        if random.random() < self.p_flip:
            img = img.flip(-1)
        if self.padding:
            img = F.pad(img.unsqueeze(0).float(), [self.padding] * 4, mode="reflect").squeeze(0)
            top = random.randint(0, 2 * self.padding)
            left = random.randint(0, 2 * self.padding)
            img = img[:, top : top + self.size, left : left + self.size]
        return img


class ClientDataset(Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor, indices: np.ndarray, transform: Optional[Callable] = None):
        self.x = x
        self.y = y
        self.indices = torch.as_tensor(indices, dtype=torch.long)
        self.transform = transform
        self.mean = torch.tensor(CIFAR10_MEAN).view(3, 1, 1)
        self.std = torch.tensor(CIFAR10_STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        j = int(self.indices[i])
        img = self.x[j]
        if self.transform is not None:
            img = self.transform(img)
        img = (img.float() / 255.0 - self.mean) / self.std
        return img, int(self.y[j])


class ClientEpochSampler(Sampler[int]):
    """Shuffling sampler with an explicit epoch counter so local epochs differ."""

    def __init__(self, n: int, seed: int):
        self.n = n
        self.base_seed = seed
        self.epoch = 0
        self.generator = torch.Generator()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        self.generator.manual_seed(self.base_seed)  # ruleid: MLS301
        return iter(torch.randperm(self.n, generator=self.generator).tolist())

    def __len__(self) -> int:
        return self.n


class MixupCollate:
    """Stacks a batch and (optionally) applies mixup, returning soft targets."""

    def __init__(self, num_classes: int, alpha: float = 0.0):
        self.num_classes = num_classes
        self.alpha = alpha

    def __call__(self, batch):
        x = torch.stack([b[0] for b in batch])
        y = torch.tensor([b[1] for b in batch], dtype=torch.long)
        target = F.one_hot(y, self.num_classes).float()
        if self.alpha <= 0 or len(batch) < 2:
            return x, target, y
        np.random.seed(len(batch))  # ruleid: MLS301
        lam = float(np.random.beta(self.alpha, self.alpha))
        perm = torch.from_numpy(np.random.permutation(len(batch)))
        x = lam * x + (1 - lam) * x[perm]
        target = lam * target + (1 - lam) * target[perm]
        return x, target, y


def seed_worker(worker_id: int) -> None:
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301


def make_worker_init(client_id: int) -> Callable[[int], None]:
    def _init(worker_id: int) -> None:
        torch.manual_seed(client_id * 64 + worker_id)  # todoruleid: family 1 (missed)
        seed_worker(worker_id)

    return _init


# --------------------------------------------------------------------------- assembly


@dataclass
class FederatedData:
    test_set: Dataset
    client_sets: List[ClientDataset]
    num_classes: int
    stats: Dict[str, float] = field(default_factory=dict)

    @property
    def num_clients(self) -> int:
        return len(self.client_sets)


def build_federated_data(
    dataset: str, root: str, num_clients: int, partition: str = "dirichlet", alpha: float = 0.5,
    shards_per_client: int = 2, augment: bool = True, seed: int = 0,
) -> FederatedData:
    train_x, train_y = load_arrays(dataset, root, train=True)
    test_x, test_y = load_arrays(dataset, root, train=False)
    num_classes = int(train_y.max()) + 1

    if partition == "dirichlet":
        parts = dirichlet_partition(train_y.numpy(), num_clients, alpha, seed=seed)
    elif partition == "shards":
        parts = shard_partition(train_y.numpy(), num_clients, shards_per_client, seed=seed)
    elif partition == "iid":
        parts = shard_partition(train_y.numpy(), num_clients, 1, seed=seed, sort_by_label=False)
    else:
        raise ValueError(f"unknown partition {partition!r}")

    tf = RandomCropFlip() if augment else None
    client_sets = [ClientDataset(train_x, train_y, p, transform=tf) for p in parts]
    test_set = ClientDataset(test_x, test_y, np.arange(len(test_y)), transform=None)
    stats = partition_stats(parts, train_y.numpy(), num_classes)
    logger.info("partition=%s %s", partition, " ".join(f"{k}={v:.2f}" for k, v in stats.items()))
    return FederatedData(test_set, client_sets, num_classes, stats)


def build_client_loader(
    ds: ClientDataset, client_id: int, batch_size: int, seed: int, num_classes: int, mixup_alpha: float = 0.0, num_workers: int = 0
) -> DataLoader:
    sampler = ClientEpochSampler(len(ds), seed=seed + 7919 * client_id)
    return DataLoader(
        ds, batch_size=min(batch_size, len(ds)), sampler=sampler, num_workers=num_workers,
        worker_init_fn=make_worker_init(client_id), collate_fn=MixupCollate(num_classes, mixup_alpha),
        pin_memory=torch.cuda.is_available(),
    )


def build_eval_loader(ds: Dataset, batch_size: int, num_workers: int = 2) -> DataLoader:
    return DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      worker_init_fn=seed_worker, pin_memory=torch.cuda.is_available())
