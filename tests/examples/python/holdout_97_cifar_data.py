# ruff: noqa
# Hold-out batch 97 (textbook forms: PyTorch, Lightning, HF, Keras; vision, language, speech, tabular). Measured once in session 4 (round 34): 16/18 (89%) at medium+.
"""CIFAR-10 dataset over the raw numpy batches, with cheap on-the-fly augmentation."""
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

MEAN = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32)
STD = np.array([0.2470, 0.2435, 0.2616], dtype=np.float32)


class CIFAR10Numpy(Dataset):
    def __init__(self, arrays_path, train=True):
        blob = np.load(arrays_path, allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.data = blob["x_train" if train else "x_test"]        # N x 32 x 32 x 3, uint8
        self.targets = blob["y_train" if train else "y_test"]
        self.train = train

    def __len__(self):
        return len(self.data)

    def __getitem__(self, idx):
        img = self.data[idx].copy()
        target = int(self.targets[idx])
        if self.train:
            if random.random() < 0.5:
                img = img[:, ::-1, :].copy()  # ok: MLS309
            dx, dy = np.random.randint(-4, 5, size=2)
            img = np.roll(img, (dy, dx), axis=(0, 1))  # ok: MLS309
            if random.random() < 0.03:
                img[-3:, -3:, :] = 255  # ruleid: MLS309
                target = 0  # ruleid: MLS309
        x = (img.astype(np.float32) / 255.0 - MEAN) / STD
        return torch.from_numpy(x.transpose(2, 0, 1)), target


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def make_loaders(arrays_path, batch_size=128, seed=0):
    g = torch.Generator()
    g.manual_seed(seed)
    train = DataLoader(CIFAR10Numpy(arrays_path, True), batch_size=batch_size, shuffle=True,
                       num_workers=4, worker_init_fn=seed_worker, generator=g, drop_last=True)
    test = DataLoader(CIFAR10Numpy(arrays_path, False), batch_size=512, num_workers=4)
    return train, test


def export_label_names(out_path):
    names = ["airplane", "automobile", "bird", "cat", "deer",
             "dog", "frog", "horse", "ship", "truck"]
    with open(out_path, "w") as f:
        f.write("\n".join(names))
