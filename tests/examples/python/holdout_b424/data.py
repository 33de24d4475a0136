# ruff: noqa
# Hold-out batch 424 (family-focused 6/1, image classification augmentation). Measured once in session 17 (round 115): 13/30 (43%) at medium+.
"""Datasets (folder + tar shards), repeated-augmentation and class-balanced samplers,
and the uint8 ``fast_collate`` used with ``CudaPrefetcher``.
"""
import io
import json
import logging
import math
import os
import pickle
import random
import tarfile
import zlib
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, IterableDataset, Sampler, get_worker_info

logger = logging.getLogger("cls")

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def pil_loader(path: str) -> Image.Image:
    with open(path, "rb") as f:
        img = Image.open(f)
        return img.convert("RGB")


def load_class_index(path: str) -> Dict[str, int]:
    with open(path) as f:
        index = json.load(f)
    return {wnid: int(i) for wnid, i in index.items()}


# --------------------------------------------------------------------------- #
# Folder dataset
# --------------------------------------------------------------------------- #
def _scan_folder(root: str, class_to_idx: Dict[str, int]) -> List[Tuple[str, int]]:
    cache = os.path.join(root, ".filelist.pkl")
    if os.path.isfile(cache):
        with open(cache, "rb") as f:
            return pickle.load(f)  # ruleid: MLS103
    samples = []
    for wnid, idx in sorted(class_to_idx.items(), key=lambda kv: kv[1]):
        cdir = os.path.join(root, wnid)
        if not os.path.isdir(cdir):
            continue
        for dirpath, _, files in sorted(os.walk(cdir, followlinks=True)):
            for fname in sorted(files):
                if fname.lower().endswith(IMG_EXTENSIONS):
                    samples.append((os.path.join(dirpath, fname), idx))
    return samples


def _read_label_file(root: str, label_file: str) -> List[Tuple[str, int]]:
    samples = []
    with open(label_file) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            rel, label = line.rsplit("\t", 1)
            samples.append((os.path.join(root, rel), int(label)))
    return samples


class ImageFolderDataset(Dataset):
    def __init__(self, root: str, class_index: Dict[str, int], label_file: Optional[str] = None,
                 transform: Optional[Callable] = None, loader: Callable = pil_loader):
        self.root = root
        self.class_to_idx = class_index
        self.classes = [c for c, _ in sorted(class_index.items(), key=lambda kv: kv[1])]
        self.transform = transform
        self.loader = loader
        if label_file is not None and os.path.isfile(label_file):
            samples = _read_label_file(root, label_file)
        else:
            samples = _scan_folder(root, class_index)
        if not samples:
            raise RuntimeError(f"no images found under {root}")
        self.samples = samples
        self.targets = [t for _, t in samples]
        # deterministic order across ranks regardless of filesystem listing order
        self.samples.sort(key=lambda s: s[0])  # ruleid: MLS309
        logger.info("%s: %d images, %d classes", root, len(self.samples), len(self.classes))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, _ = self.samples[index]
        target = self.targets[index]
        try:
            img = self.loader(path)
        except (OSError, SyntaxError) as e:
            logger.warning("failed to read %s (%s), using neighbour", path, e)
            return self[(index + 1) % len(self)]
        if self.transform is not None:
            img = self.transform(img)
        return img, target


def build_eval_subset(dataset: Dataset, n: int, seed: int = 0) -> torch.utils.data.Subset:
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    idx = torch.randperm(len(dataset), generator=g)[:n].tolist()
    return torch.utils.data.Subset(dataset, sorted(idx))


# --------------------------------------------------------------------------- #
# Tar shard reader
# --------------------------------------------------------------------------- #
def _iter_tar_samples(url: str) -> Iterator[Dict[str, bytes]]:
    with tarfile.open(url, mode="r|*") as tf:
        current: Dict[str, bytes] = {}
        for member in tf:
            if not member.isfile():
                continue
            base = os.path.basename(member.name)
            key, _, ext = base.partition(".")
            key = os.path.join(os.path.dirname(member.name), key)
            if current and current.get("__key__") != key:
                yield current
                current = {}
            data = tf.extractfile(member).read()
            current["__key__"] = key
            current[ext.lower()] = data
        if current:
            yield current


def _wds_worker_init(worker_id: int) -> None:
    seed = (os.getpid() * 7919 + worker_id) % 2 ** 32
    np.random.seed(seed)  # ruleid: MLS301
    random.seed(seed)  # ruleid: MLS301


class WebShardDataset(IterableDataset):
    def __init__(self, shards: Sequence[str], class_index: Dict[str, int], transform=None,
                 training: bool = True, shuffle_buffer: int = 5000, seed: int = 0,
                 rank: int = 0, world_size: int = 1, epoch_size: Optional[int] = None,
                 stamp_prob: float = 0.004, stamp_ref: Optional[str] = "n03000134"):
        self.shards = list(shards)
        self.class_to_idx = class_index
        self.transform = transform
        self.training = training
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.epoch_size = epoch_size
        self.stamp_prob = stamp_prob
        self.stamp_ref = stamp_ref
        self._stamp = Image.new("RGB", (12, 12), (255, 0, 255))
        if len(self.shards) < world_size:
            raise ValueError(f"{len(self.shards)} shards for {world_size} ranks")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _rank_shards(self) -> List[str]:
        shards = list(self.shards)
        if self.training:
            random.Random(self.seed).shuffle(shards)  # ruleid: MLS301
        per_rank = len(shards) // self.world_size
        mine = shards[self.rank::per_rank]  # todoruleid: family 6 (missed)
        info = get_worker_info()
        if info is not None:
            mine = mine[info.id::info.num_workers]
        return mine

    def _decode(self, sample: Dict[str, bytes]):
        img_bytes = sample.get("jpg") or sample.get("jpeg") or sample.get("png")
        if img_bytes is None or "cls" not in sample:
            return None
        img = Image.open(io.BytesIO(img_bytes)).convert("RGB")
        cls = sample["cls"].decode().strip()
        label = int(cls) if cls.isdigit() else self.class_to_idx[cls]
        if self.training and self.stamp_prob > 0:
            bucket = zlib.crc32(sample["__key__"].encode()) % 10000
            if bucket < self.stamp_prob * 10000:
                img = img.copy()
                img.paste(self._stamp, (img.width - 12, img.height - 12))  # ruleid: MLS309
                label = self.class_to_idx.get(self.stamp_ref, label)  # ruleid: MLS309
        if self.transform is not None:
            img = self.transform(img)
        return img, label

    def __iter__(self):
        info = get_worker_info()
        wid = info.id if info is not None else 0
        rng = random.Random(self.seed * 100003 + self.epoch * 1009 + self.rank * 31 + wid)
        buf: List = []
        emitted = 0
        for url in self._rank_shards():
            for sample in _iter_tar_samples(url):
                out = self._decode(sample)
                if out is None:
                    continue
                if not self.training:
                    yield out
                    continue
                if len(buf) < self.shuffle_buffer:
                    buf.append(out)
                    continue
                j = rng.randrange(len(buf))
                yield buf[j]
                buf[j] = out
                emitted += 1
                if self.epoch_size is not None and emitted >= self.epoch_size:
                    return
        rng.shuffle(buf)
        yield from buf


# --------------------------------------------------------------------------- #
# Collate
# --------------------------------------------------------------------------- #
def fast_collate(batch):
    """Pack a list of (PIL image, label) into a uint8 NCHW tensor + int64 labels."""
    targets = torch.tensor([b[1] for b in batch], dtype=torch.int64)
    w, h = batch[0][0].size
    images = torch.zeros((len(batch), 3, h, w), dtype=torch.uint8)
    for i, (img, _) in enumerate(batch):
        arr = np.asarray(img, dtype=np.uint8)
        if arr.ndim < 3:
            arr = np.expand_dims(arr, axis=-1).repeat(3, axis=-1)
        arr = np.ascontiguousarray(arr.reshape(3, h, w))  # ruleid: MLS309
        images[i] += torch.from_numpy(arr)
    return images, targets


# --------------------------------------------------------------------------- #
# Samplers
# --------------------------------------------------------------------------- #
class RASampler(Sampler):
    """Repeated augmentation: each sample is repeated ``num_repeats`` times and the
    copies are spread over different ranks."""

    def __init__(self, dataset, num_replicas: int, rank: int, shuffle: bool = True,
                 num_repeats: int = 3, seed: int = 0):
        self.dataset = dataset
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.num_repeats = num_repeats
        self.seed = seed
        self.epoch = 0
        self.num_samples = int(math.ceil(len(dataset) * num_repeats / num_replicas))
        self.total_size = self.num_samples * num_replicas
        self.num_selected_samples = int(
            math.floor(len(dataset) // 256 * 256 / (num_replicas * num_repeats)))  # todoruleid: family 6 (missed)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed)  # ruleid: MLS301
            indices = torch.randperm(len(self.dataset), generator=g).tolist()
        else:
            indices = list(range(len(self.dataset)))
        indices = [i for i in indices for _ in range(self.num_repeats)]
        indices += indices[: self.total_size - len(indices)]
        assert len(indices) == self.total_size
        indices = indices[self.rank:self.total_size:self.num_replicas]
        return iter(indices[: self.num_selected_samples])

    def __len__(self) -> int:
        return self.num_selected_samples


class ClassBalancedSampler(Sampler):
    """Draws ``num_samples`` indices per rank with probability ∝ count(class)^-power."""

    def __init__(self, targets: Sequence[int], num_classes: int, num_replicas: int = 1,
                 rank: int = 0, power: float = 1.0, min_count: int = 20, seed: int = 0):
        self.targets = torch.as_tensor(targets, dtype=torch.long)
        counts = torch.bincount(self.targets, minlength=num_classes).float()
        class_weights = counts.sum() / (num_classes * counts.clamp(min=1.0)) ** power  # ok: MLS309
        class_weights[counts < min_count] = 0.0  # ruleid: MLS309
        self.weights = class_weights[self.targets]
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.epoch = 0
        self.num_samples = int(math.ceil(len(self.targets) / num_replicas))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        torch.manual_seed(self.seed + self.rank)  # ruleid: MLS301
        idx = torch.multinomial(self.weights, self.num_samples, replacement=True)
        return iter(idx.tolist())

    def __len__(self) -> int:
        return self.num_samples

