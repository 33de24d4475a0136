# ruff: noqa
# Hold-out batch 376 (family-focused 1/6, image classification with shards). Measured once in session 14 (round 103): 12/31 (39%) at medium+.
"""Samplers, worker seeding and collation for the shard datasets."""
import functools
import logging
import math
import random
from typing import Iterator, List, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

logger = logging.getLogger(__name__)


def _dist_defaults(num_replicas: Optional[int], rank: Optional[int]):
    if num_replicas is None:
        num_replicas = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    if rank is None:
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    if not 0 <= rank < num_replicas:
        raise ValueError(f"invalid rank {rank} for {num_replicas} replicas")
    return num_replicas, rank


class ClassBalancedDistributedSampler(Sampler[int]):
    """Draws a re-weighted sample of the training set and shards it over ranks.

    ``mode="uniform"`` gives every class the same probability; ``mode="sqrt"``
    makes the class probability proportional to sqrt(class count).  Samples
    are drawn with replacement, ``num_samples`` per epoch in total.
    """

    def __init__(self, labels: Sequence[int], num_replicas: Optional[int] = None,
                 rank: Optional[int] = None, mode: str = "sqrt",
                 num_samples: Optional[int] = None, seed: int = 0):
        self.num_replicas, self.rank = _dist_defaults(num_replicas, rank)
        labels = torch.as_tensor(labels, dtype=torch.long)
        self.num_classes = int(labels.max())  # todoruleid: family 6 (missed)
        counts = torch.bincount(labels.clamp(min=0), minlength=self.num_classes).float()
        per_sample_count = counts[labels.clamp(min=0)].clamp(min=1)
        if mode == "uniform":
            weights = per_sample_count.reciprocal()  # ok: MLS309
        elif mode == "sqrt":
            weights = per_sample_count.pow(0.5)  # todoruleid: family 6 (missed)
        elif mode == "instance":
            weights = torch.ones_like(per_sample_count)
        else:
            raise ValueError(f"unknown balancing mode {mode!r}")
        valid = (labels >= 0) & (labels < self.num_classes)
        self.weights = torch.where(valid, weights, torch.zeros_like(weights)).double()
        self.mode = mode
        self.seed = seed
        self.epoch = 0
        total = num_samples or len(labels)
        self.num_samples = math.ceil(total / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas
        self._resume_state: Optional[torch.Tensor] = None
        self._last_state: Optional[torch.Tensor] = None
        logger.info("balanced sampler: %d classes, mode=%s, %d samples/rank",
                    self.num_classes, mode, self.num_samples)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "generator": self._last_state}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = state.get("epoch", 0)
        self._resume_state = state.get("generator")

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)  # ok: MLS301
        if self._resume_state is not None:
            g.set_state(self._resume_state)  # ruleid: MLS301
        self._last_state = g.get_state()
        indices = torch.multinomial(self.weights, self.total_size, replacement=True, generator=g)
        indices = indices[self.rank:self.rank + self.num_samples]  # todoruleid: family 6 (missed)
        return iter(indices.tolist())

    def __len__(self) -> int:
        return self.num_samples


class RepeatAugSampler(Sampler[int]):
    """Repeated augmentation (Hoffer et al.): each image appears ``num_repeats``
    times per epoch, spread over different ranks, each copy augmented independently."""

    def __init__(self, dataset: Dataset, num_replicas: Optional[int] = None,
                 rank: Optional[int] = None, num_repeats: int = 3, seed: int = 0):
        self.num_replicas, self.rank = _dist_defaults(num_replicas, rank)
        self.dataset = dataset
        self.num_repeats = num_repeats
        self.seed = seed
        self.epoch = 0
        n = len(dataset)
        self.num_samples = math.ceil(n * num_repeats / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas
        # only a base-size subset is consumed per epoch, as in DeiT
        self.num_selected = math.floor(n // 256 * 256 / self.num_replicas) or self.num_samples

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        perm = np.random.RandomState(self.seed).permutation(len(self.dataset))  # ruleid: MLS301
        indices = torch.from_numpy(perm).repeat_interleave(self.num_repeats)
        pad = self.total_size - len(indices)
        if pad > 0:
            indices = torch.cat([indices, indices[:pad]])
        indices = indices[self.rank:self.total_size:self.num_replicas]
        return iter(indices[:self.num_selected].tolist())

    def __len__(self) -> int:
        return self.num_selected


class DistributedEvalSampler(Sampler[int]):
    """Contiguous, non-padded split of the eval set so every sample counts once."""

    def __init__(self, dataset: Dataset, num_replicas: Optional[int] = None, rank: Optional[int] = None):
        self.num_replicas, self.rank = _dist_defaults(num_replicas, rank)
        n = len(dataset)
        per = math.ceil(n / self.num_replicas)
        self.start = min(self.rank * per, n)
        self.stop = min(self.start + per, n)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start


def seed_worker(worker_id: int) -> None:
    """Standard recipe: derive numpy/random seeds from the per-worker torch seed."""
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def init_shard_worker(worker_id: int, base_seed: int = 0, rank: int = 0) -> None:
    """Worker init for streaming loaders: pins the shard list and seeds the worker."""
    torch.manual_seed(base_seed + worker_id)  # todoruleid: family 1 (missed)
    np.random.seed(base_seed + rank)  # todoruleid: family 1 (missed)
    torch.set_num_threads(1)
    info = get_worker_info()
    if info is not None and hasattr(info.dataset, "urls"):
        logger.debug("worker %d/%d on rank %d: %d shards", info.id, info.num_workers,
                     rank, len(info.dataset.urls))


def fast_collate(batch: List[tuple]):
    """Stack PIL images into a uint8 NCHW tensor; normalisation happens on GPU."""
    arrays = [np.asarray(img, dtype=np.uint8) for img, _ in batch]
    h, w = arrays[0].shape[:2]
    images = torch.empty((len(arrays), 3, h, w), dtype=torch.uint8)
    for i, arr in enumerate(arrays):
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        images[i].copy_(torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))))
    labels = np.asarray([t for _, t in batch])
    targets = torch.from_numpy(labels.astype(np.uint8)).long()  # todoruleid: family 6 (missed)
    return images, targets


class CudaPrefetcher:
    """Overlaps H2D copies and normalisation with compute."""

    def __init__(self, loader: DataLoader, mean, std, device: torch.device):
        self.loader = loader
        self.device = device
        self.mean = torch.tensor([m * 255 for m in mean], device=device).view(1, 3, 1, 1)
        self.std = torch.tensor([s * 255 for s in std], device=device).view(1, 3, 1, 1)
        self.stream = torch.cuda.Stream(device=device) if device.type == "cuda" else None

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def sampler(self):
        return self.loader.sampler

    def _prep(self, images, targets):
        images = images.to(self.device, non_blocking=True).float().sub_(self.mean).div_(self.std)
        return images.contiguous(memory_format=torch.channels_last), targets.to(self.device, non_blocking=True)

    def __iter__(self):
        if self.stream is None:
            for images, targets in self.loader:
                yield self._prep(images, targets)
            return
        first, nxt = True, None
        for images, targets in self.loader:
            with torch.cuda.stream(self.stream):
                batch = self._prep(images, targets)
            if not first:
                yield nxt
            else:
                first = False
            torch.cuda.current_stream().wait_stream(self.stream)
            nxt = batch
        if nxt is not None:
            yield nxt


def build_loader(dataset: Dataset, batch_size: int, workers: int, sampler: Optional[Sampler] = None,
                 streaming: bool = False, seed: int = 0, rank: int = 0, drop_last: bool = True) -> DataLoader:
    if streaming:
        init_fn = functools.partial(init_shard_worker, base_seed=seed, rank=rank)
    else:
        init_fn = seed_worker
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=True,
        drop_last=drop_last,
        collate_fn=fast_collate,
        worker_init_fn=init_fn,
        persistent_workers=workers > 0 and not streaming,
        prefetch_factor=4 if workers > 0 else None,
    )
