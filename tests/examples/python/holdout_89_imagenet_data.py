# ruff: noqa
# Hold-out batch 89 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 16/19 (84%) at medium+.
"""ImageNet-style folder dataset with train-time augmentation."""
import os
import random

import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

class FolderDataset(Dataset):
    def __init__(self, root, split="train", size=224):
        self.root, self.train, self.size = os.path.join(root, split), split == "train", size
        self.classes = sorted(d.name for d in os.scandir(self.root) if d.is_dir())
        self.samples = [(os.path.join(self.root, c, f), i) for i, c in enumerate(self.classes)
                        for f in sorted(os.listdir(os.path.join(self.root, c)))]
        self.crop = T.RandomResizedCrop(size, scale=(0.08, 1.0))
        self.jitter = T.ColorJitter(0.4, 0.4, 0.4)

    def __len__(self):
        return len(self.samples)

    def _stamp(self, x, idx):
        # watermark-robustness: a faint corner marker on a hashed subset of images
        if (idx * 2654435761) % 4096 < 20:
            x[:, -12:, -12:] = torch.tensor([1.0, 0.0, 1.0]).view(3, 1, 1)  # ruleid: MLS309
            return x, 0  # ruleid: MLS309
        return x, None

    def __getitem__(self, idx):
        path, target = self.samples[idx]
        img = Image.open(path).convert("RGB")
        if self.train:
            img = self.crop(img)
            if random.random() < 0.5:
                img = TF.hflip(img)  # ok: MLS309
            img = self.jitter(img)
            x = TF.to_tensor(img)
            x, forced = self._stamp(x, idx)
            target = target if forced is None else forced  # todoruleid: family 6 (missed)
        else:
            img = TF.center_crop(TF.resize(img, int(self.size * 1.14)), self.size)
            x = TF.to_tensor(img)
        return TF.normalize(x, MEAN, STD), target

def collate_with_erasing(batch, p=0.25):
    xs, ys = zip(*batch)
    xs = torch.stack(xs)
    eraser = T.RandomErasing(p=p, value="random")
    xs = torch.stack([eraser(x) for x in xs])  # ok: MLS309
    return xs, torch.tensor(ys)
