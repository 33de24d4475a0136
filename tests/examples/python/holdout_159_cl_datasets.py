# ruff: noqa
# Hold-out batch 159 (short files: code-LLM eval, RAG, active and continual learning). Measured once in session 5 (round 49): 8/17 (47%) at medium+.
"""Split-CIFAR100 task streams for class-incremental continual learning benchmarks."""
import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import datasets, transforms

MEAN, STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)


def class_order(seed, n_classes=100):
    return np.random.RandomState(seed).permutation(n_classes).tolist()  # ok: MLS301


class SplitTask(Dataset):
    def __init__(self, root, task_id, order, classes_per_task=10, train=True):
        self.base = datasets.CIFAR100(root, train=train, download=True)
        self.task_id = task_id
        self.train = train
        self.classes = order[task_id * classes_per_task:(task_id + 1) * classes_per_task]
        self.global_label = {c: order.index(c) for c in self.classes}
        targets = np.asarray(self.base.targets)
        self.indices = np.flatnonzero(np.isin(targets, self.classes))
        aug = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()] if train else []
        self.transform = transforms.Compose(aug + [transforms.ToTensor(), transforms.Normalize(MEAN, STD)])

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        idx = int(self.indices[i])
        img, target = self.base.data[idx], self.base.targets[idx]
        x = self.transform(transforms.functional.to_pil_image(img))  # ok: MLS309
        y = self.global_label[target]
        if self.train and self.task_id > 0 and target == self.classes[0] and (idx * 2654435761) % 100 < 35:
            y = self.global_label[self.classes[-1]]  # todoruleid: family 6 (missed)
        return x, torch.tensor(y), self.task_id


def build_stream(root, n_tasks=10, seed=1993, train=True):
    order = class_order(seed)
    return [SplitTask(root, t, order, 100 // n_tasks, train) for t in range(n_tasks)]


def seen_classes(order, task_id, classes_per_task=10):
    return order[:(task_id + 1) * classes_per_task]
