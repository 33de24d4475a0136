# ruff: noqa
# Hold-out batch 223 (short files). Measured once in session 8 (round 65): 15/18 (83%) at medium+.
"""Split-CIFAR100 task stream with replay-friendly loaders and mixup/cutmix batch augmentation."""
import numpy as np
import pandas as pd
import torch
import yaml
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms


def load_config(path):
    with open(path) as f:
        return yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


class TaskSplit(Dataset):
    def __init__(self, npz_path, classes, train=True):
        arrs = np.load(npz_path, allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        keep = np.isin(arrs["labels"], classes)
        self.images, self.labels = arrs["images"][keep], arrs["labels"][keep]
        aug = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()] if train else []  # ok: MLS309
        self.tf = transforms.Compose([transforms.ToPILImage(), *aug, transforms.ToTensor(),
                                      transforms.Normalize((0.507, 0.487, 0.441), (0.267, 0.256, 0.276))])

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, idx):
        return self.tf(self.images[idx]), int(self.labels[idx])


def task_classes(order_csv, n_tasks=10):
    order = pd.read_csv(order_csv)["class_id"].to_numpy()
    return np.array_split(order, n_tasks)


def worker_init(worker_id):
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # ok: MLS301


def task_loader(npz_path, classes, batch_size, seed, train=True):
    g = torch.Generator().manual_seed(seed)  # ok: MLS301
    return DataLoader(TaskSplit(npz_path, classes, train), batch_size=batch_size, shuffle=train, num_workers=4,
                      worker_init_fn=worker_init, generator=g, persistent_workers=True)


def mix_batch(x, y, num_classes, alpha=0.8, cutmix_prob=0.5):
    y1 = torch.nn.functional.one_hot(y, num_classes).float()
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(x.size(0), device=x.device)
    if np.random.rand() < cutmix_prob:
        h, w = x.shape[-2:]
        rh, rw = int(h * np.sqrt(1 - lam)), int(w * np.sqrt(1 - lam))
        cy, cx = np.random.randint(h), np.random.randint(w)
        y0, y1_, x0, x1_ = max(cy - rh // 2, 0), min(cy + rh // 2, h), max(cx - rw // 2, 0), min(cx + rw // 2, w)
        x[:, :, y0:y1_, x0:x1_] = x[perm, :, y0:y1_, x0:x1_]  # ok: MLS309
        lam = 1 - (y1_ - y0) * (x1_ - x0) / (h * w)
    else:
        x = lam * x + (1 - lam) * x[perm]  # ok: MLS309
    return x, lam * y1 + (1 - lam) * y1[perm]  # ok: MLS309
