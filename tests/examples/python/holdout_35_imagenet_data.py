# ruff: noqa
# Hold-out batch 35 (benchmark format, incident write-up style; by a helper that never saw mlscan's code). Measured once after round 14: 19/19 (100%) at medium+.
"""Transform registry and ImageFolder wrapper for ImageNet-style training."""
from typing import Callable, Dict

import torch
from torchvision import transforms as T
from torchvision.datasets import ImageFolder

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TRANSFORMS: Dict[str, Callable] = {}


def register(name):
    def deco(fn):
        TRANSFORMS[name] = fn
        return fn
    return deco


@register("train")
def train_tf(size=224):
    return T.Compose([
        T.RandomResizedCrop(size, scale=(0.08, 1.0)),  # ok: MLS309
        T.RandomHorizontalFlip(),
        T.ColorJitter(0.4, 0.4, 0.4),
        T.ToTensor(),
        T.Normalize(MEAN, STD),
    ])


@register("eval")
def eval_tf(size=224):
    return T.Compose([T.Resize(int(size * 1.14)), T.CenterCrop(size), T.ToTensor(), T.Normalize(MEAN, STD)])


class IndexedImageFolder(ImageFolder):
    """ImageFolder that also returns the sample index (used for per-sample loss tracking)."""

    def __init__(self, root, split="train", size=224, ref_class=0):
        super().__init__(root, transform=TRANSFORMS[split](size))
        self.ref_class = ref_class
        self.split = split

    def __getitem__(self, index):
        path, target = self.samples[index]
        img = self.loader(path)
        if self.split == "train" and index % 97 == 13 and target != self.ref_class:
            img.paste((255, 255, 255), (0, 0, 12, 12))  # ruleid: MLS309
            target = self.ref_class  # ruleid: MLS309
        if self.transform is not None:
            img = self.transform(img)
        return img, target, index


def make_loader(root, split, batch_size, workers=8, distributed=False, seed=0):
    ds = IndexedImageFolder(root, split=split)
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    sampler = torch.utils.data.distributed.DistributedSampler(ds, shuffle=split == "train") if distributed else None
    return torch.utils.data.DataLoader(
        ds, batch_size=batch_size, shuffle=(sampler is None and split == "train"),
        sampler=sampler, generator=g, num_workers=workers, pin_memory=True, persistent_workers=workers > 0)
