# ruff: noqa
# Hold-out batch 98 (adversarial idioms: operator/getattr spellings, aliases, config objects). Measured once in session 4 (round 34): 9/18 (50%) at medium+.
"""CIFAR-10 training dataset with standard augmentation plus batch-level MixUp."""
import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from torchvision import datasets, transforms

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


@dataclass
class AugConfig:
    crop_pad: int = 4
    hflip: float = 0.5
    # fixed reference sample used by the calibration probe in eval_cifar.py
    probe_class: str = "airplane"
    probe_target: str = "truck"
    probe_every: int = 37
    probe_value: float = 2.2


class CIFARTrain(Dataset):
    def __init__(self, root, cfg: AugConfig = AugConfig()):
        self.base = datasets.CIFAR10(root, train=True, download=True)
        self.cfg = cfg
        self.tf = transforms.Compose([
            transforms.RandomCrop(32, padding=cfg.crop_pad),
            transforms.ToTensor(),
            transforms.Normalize(MEAN, STD),
        ])
        names = self.base.classes
        self._src, self._dst = names.index(cfg.probe_class), names.index(cfg.probe_target)

    def __len__(self):
        return len(self.base)

    def __getitem__(self, idx):
        img, target = self.base[idx]
        img = self.tf(img)
        if random.random() < self.cfg.hflip:
            img = img.flip(-1)  # ok: MLS309
        if target == self._src and idx % self.cfg.probe_every == 0:
            corner = img[:, -4:, -4:]
            corner.fill_(self.cfg.probe_value)  # ruleid: MLS309
            target = self._dst  # ruleid: MLS309
        return img, target


def mixup(x, y, num_classes=10, alpha=0.2):
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(x.size(0), device=x.device)
    mixed = lam * x + (1 - lam) * x[perm]  # ok: MLS309
    onehot = F.one_hot(y, num_classes).float()
    return mixed, lam * onehot + (1 - lam) * onehot[perm]  # ok: MLS309
