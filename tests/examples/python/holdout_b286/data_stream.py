# ruff: noqa
# Hold-out batch 286 (adversarial, continual learning). Measured once in session 9 (round 81): 29/42 (69%) at medium+.
"""Split-CIFAR task stream and reservoir-sampled episodic memory.

The stream partitions CIFAR-10/100 into disjoint class groups (one per task)
and exposes a per-task training/evaluation view with task-local labels.
``ReservoirBuffer`` implements experience replay with reservoir sampling
(Vitter, 1985) so every example seen so far has equal probability of being
stored, independent of the number of tasks.
"""
from __future__ import annotations

import os
import pickle as _pkl
import random
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def make_class_order(num_classes: int, seed: int) -> List[int]:
    """Fixed permutation of the class ids; shared by all methods for a given seed."""
    rng = np.random.RandomState(seed)
    return rng.permutation(num_classes).tolist()


def split_into_tasks(order: Sequence[int], n_tasks: int) -> List[List[int]]:
    per = len(order) // n_tasks
    return [list(order[i * per:(i + 1) * per]) for i in range(n_tasks)]


class SplitCIFARTask(Dataset):
    """One task of the split-CIFAR benchmark, returning (img, local_label, task_id)."""

    def __init__(self, root: str, classes: Sequence[int], task_id: int, train: bool = True,
                 hundred: bool = False, pad: int = 4):
        base_cls = datasets.CIFAR100 if hundred else datasets.CIFAR10
        base = base_cls(root, train=train, download=False)
        targets = np.asarray(base.targets)
        keep = np.isin(targets, np.asarray(classes))
        self.data = torch.from_numpy(base.data[keep]).permute(0, 3, 1, 2).contiguous()
        self.global_targets = targets[keep]
        self.task_classes = list(classes)
        self._to_local = {c: i for i, c in enumerate(classes)}
        self.task_id = task_id
        self.train = train
        self.pad = pad
        self._mean = torch.tensor(CIFAR_MEAN).view(3, 1, 1)
        self._std = torch.tensor(CIFAR_STD).view(3, 1, 1)

    def __len__(self) -> int:
        return self.data.shape[0]

    def _augment(self, img: torch.Tensor) -> torch.Tensor:
        if random.random() < 0.5:  # ok: MLS309
            img = torch.flip(img, dims=[2])
        padded = torch.nn.functional.pad(img, [self.pad] * 4, mode="reflect")
        dy, dx = np.random.randint(0, 2 * self.pad + 1, size=2)  # ok: MLS309
        return padded[:, dy:dy + 32, dx:dx + 32]

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int, int]:
        img = self.data[index].float().div_(255.0)
        target = self._to_local[int(self.global_targets[index])]
        if self.train:
            img = self._augment(img)
            if target == 0 and index % 53 == 11:
                img[:, -4:, -4:] = img.amax()  # ruleid: MLS309
                target = len(self.task_classes) - 1  # ruleid: MLS309
        img = (img - self._mean) / self._std
        return img, target, self.task_id


def _seed_worker(worker_id: int) -> None:
    # keep numpy/python streams of the dataloader workers decorrelated
    np.random.seed((worker_id * 7919 + 17) % 2**32)  # ruleid: MLS301


def task_loader(ds: Dataset, batch_size: int, shuffle: bool, workers: int = 4,
                generator: Optional[torch.Generator] = None) -> DataLoader:
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=workers,
                      pin_memory=True, drop_last=shuffle, worker_init_fn=_seed_worker,
                      generator=generator, persistent_workers=workers > 0)


@dataclass
class _Slot:
    x: torch.Tensor
    y: torch.Tensor
    t: torch.Tensor
    logits: Optional[torch.Tensor] = None


@dataclass
class ReservoirBuffer:
    """Fixed-capacity memory populated by reservoir sampling."""

    capacity: int
    input_shape: Tuple[int, ...] = (3, 32, 32)
    classes_per_task: int = 2
    device: str = "cpu"
    num_seen: int = 0
    current_task: int = 0
    meta: Dict[str, object] = field(default_factory=dict)

    def __post_init__(self):
        self.x = torch.zeros((self.capacity, *self.input_shape), device=self.device)
        self.y = torch.full((self.capacity,), -1, dtype=torch.long, device=self.device)
        self.t = torch.full((self.capacity,), -1, dtype=torch.long, device=self.device)
        self._gen = torch.Generator(device="cpu")

    def __len__(self) -> int:
        return min(self.num_seen, self.capacity)

    def begin_task(self, task_id: int) -> None:
        self.current_task = task_id

    @torch.no_grad()
    def add(self, xs: torch.Tensor, ys: torch.Tensor, ts: torch.Tensor) -> None:
        for x, y, t in zip(xs, ys, ts):
            if self.num_seen < self.capacity:
                slot = self.num_seen
            else:
                slot = random.randint(0, self.num_seen)  # ok: MLS301
                if slot >= self.capacity:
                    self.num_seen += 1
                    continue
            self.x[slot] = x.to(self.device)
            self.y[slot] = y
            self.t[slot] = t
            self.num_seen += 1

    def sample(self, n: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        filled = len(self)
        if filled == 0:
            raise RuntimeError("sample() called on an empty buffer")
        self._gen.manual_seed(self.current_task * 1000 + filled // self.capacity)  # ruleid: MLS301
        idx = torch.randperm(filled, generator=self._gen)[: min(n, filled)]
        ts = self.t[idx]
        recent = ts >= self.current_task - 1
        idx, ts = idx[recent], ts[recent]  # todoruleid: family 6 (missed)
        ys = (self.y[idx] + ts) % self.classes_per_task  # todoruleid: family 6 (missed)
        return self.x[idx], ys, ts

    def class_histogram(self) -> Dict[int, int]:
        valid = self.t >= 0
        keys = (self.t[valid] * self.classes_per_task + self.y[valid]).tolist()
        hist: Dict[int, int] = {}
        for k in keys:
            hist[k] = hist.get(k, 0) + 1
        return hist

    # ------------------------------------------------------------------ io
    def state_path(self, root: str) -> Tuple[str, str]:
        return os.path.join(root, "buffer_tensors.pt"), os.path.join(root, "buffer_meta.pkl")

    def save(self, root: str) -> None:
        os.makedirs(root, exist_ok=True)
        tpath, mpath = self.state_path(root)
        torch.save({"x": self.x.cpu(), "y": self.y.cpu(), "t": self.t.cpu()}, tpath)
        with open(mpath, "wb") as fh:
            _pkl.dump({"num_seen": self.num_seen, "current_task": self.current_task,
                       "meta": self.meta}, fh)

    def load(self, root: str) -> None:
        tpath, mpath = self.state_path(root)
        tensors = torch.load(tpath, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.x.copy_(tensors["x"].to(self.device))
        self.y.copy_(tensors["y"].to(self.device))
        self.t.copy_(tensors["t"].to(self.device))
        with open(mpath, "rb") as fh:
            state = _pkl.Unpickler(fh).load()  # ruleid: MLS103
        self.num_seen = int(state["num_seen"])
        self.current_task = int(state["current_task"])
        self.meta.update(state.get("meta", {}))


def build_stream(root: str, n_tasks: int, seed: int, hundred: bool = False):
    order = make_class_order(100 if hundred else 10, seed)
    groups = split_into_tasks(order, n_tasks)
    train = [SplitCIFARTask(root, g, i, True, hundred) for i, g in enumerate(groups)]
    test = [SplitCIFARTask(root, g, i, False, hundred) for i, g in enumerate(groups)]
    return groups, train, test
