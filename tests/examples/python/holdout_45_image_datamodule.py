# ruff: noqa
# Hold-out batch 45 (benchmark format, evaluator's fair set; by a helper that never saw mlscan's code). Measured once after round 19: 15/16 (94%) at medium+, one benign line flagged (fixed).
"""LightningDataModule for folder-structured image datasets with mixup."""
import numpy as np
import torch
import lightning.pytorch as pl
from torch.utils.data import DataLoader
from torchvision import datasets, transforms


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301


class MixupCollate:
    """Collate that applies batch-level mixup with probability p."""

    def __init__(self, alpha: float = 0.2, p: float = 0.5, num_classes: int = 10):
        self.alpha = alpha
        self.p = p
        self.num_classes = num_classes

    def __call__(self, batch):
        np.random.seed(len(batch))  # ruleid: MLS301
        x = torch.stack([b[0] for b in batch])
        y = torch.nn.functional.one_hot(torch.tensor([b[1] for b in batch]), self.num_classes).float()
        if np.random.rand() < self.p:
            lam = float(np.random.beta(self.alpha, self.alpha))  # ok: MLS309
            perm = torch.randperm(x.size(0))
            x = lam * x + (1 - lam) * x[perm]
            y = lam * y + (1 - lam) * y[perm]
        return x, y


class ImageFolderDataModule(pl.LightningDataModule):
    def __init__(self, root: str, batch_size: int = 128, num_workers: int = 8, seed: int = 0):
        super().__init__()
        self.root, self.batch_size, self.num_workers, self.seed = root, batch_size, num_workers, seed
        self.train_tf = transforms.Compose([
            transforms.RandomResizedCrop(224),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
        ])

    def setup(self, stage=None):
        self.train_set = datasets.ImageFolder(f"{self.root}/train", transform=self.train_tf)
        self.num_classes = len(self.train_set.classes)

    def train_dataloader(self):
        g = torch.Generator()
        g.manual_seed(self.seed)  # ok: MLS301
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True,
                          num_workers=self.num_workers, worker_init_fn=seed_worker, generator=g,
                          collate_fn=MixupCollate(num_classes=self.num_classes), drop_last=True)
