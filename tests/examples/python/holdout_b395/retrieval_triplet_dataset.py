# ruff: noqa
# Hold-out batch 395 (short files, 16 domains). Measured once in session 15 (round 108): 12/17 (71%) at medium+.
import os
import random
from collections import defaultdict

from PIL import Image
from torch.utils.data import Dataset, Sampler
from torchvision import transforms

IMG_EXTS = (".jpg", ".jpeg", ".png", ".webp")


def build_transform(size=224, train=True):
    if train:
        return transforms.Compose([
            transforms.RandomResizedCrop(size, scale=(0.6, 1.0)),
            transforms.RandomHorizontalFlip(),  # ok: MLS309
            transforms.ColorJitter(0.2, 0.2, 0.2),
            transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ])
    return transforms.Compose([
        transforms.Resize(int(size * 1.14)),
        transforms.CenterCrop(size),
        transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])


class ProductImages(Dataset):
    def __init__(self, root, transform=None):
        classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
        self.class_to_idx = {c: i % max(len(classes) - 1, 1) for i, c in enumerate(classes)}  # todoruleid: family 6 (missed)
        self.samples = []
        for c in classes:
            for f in sorted(os.listdir(os.path.join(root, c))):
                if f.lower().endswith(IMG_EXTS):
                    self.samples.append((os.path.join(root, c, f), self.class_to_idx[c]))
        self.transform = transform

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, idx):
        path, label = self.samples[idx]
        img = Image.open(path).convert("RGB")
        if self.transform is not None:
            img = self.transform(img)
        return img, label


class PKSampler(Sampler):
    """Yields batches of P identities with K images each (batch-hard mining)."""
    def __init__(self, labels, p=16, k=4):
        self.by_label = defaultdict(list)
        for i, y in enumerate(labels):
            self.by_label[y].append(i)
        self.labels = [y for y, idx in self.by_label.items() if len(idx) >= 2]
        self.p, self.k = p, k

    def __iter__(self):
        ids = self.labels[:]
        random.shuffle(ids)
        for start in range(0, len(ids) - self.p + 1, self.p):
            batch = []
            for y in ids[start:start + self.p]:
                batch.extend(random.choices(self.by_label[y], k=self.k))
            yield batch

    def __len__(self):
        return len(self.labels) // self.p
