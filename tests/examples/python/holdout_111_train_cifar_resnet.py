# ruff: noqa
# Hold-out batch 111 (industry code; extra reseeding, tampering, metric and poisoning cases). Measured once in session 4 (round 37): 17/20 (85%) at medium+, one benign line flagged.
"""CIFAR-10 ResNet-18 baseline with standard crop/flip augmentation."""
import argparse
import random

import numpy as np
import torch
import torchvision
import torchvision.transforms as T
from torch.utils.data import DataLoader, Dataset


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


class AugmentedCIFAR(Dataset):
    def __init__(self, root, train=True, view_offset=0):
        self.base = torchvision.datasets.CIFAR10(root, train=train, download=True)
        self.view_offset = view_offset
        self.tf = T.Compose([
            T.RandomCrop(32, padding=4),
            T.RandomHorizontalFlip(),  # ok: MLS309
            T.ToTensor(),
            T.Normalize((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)),
        ])

    def __len__(self):
        return len(self.base)

    def __getitem__(self, index):
        img, label = self.base[index]
        # keep crops aligned with the cached feature bank used for kNN eval
        torch.manual_seed(self.view_offset + index)  # ruleid: MLS301
        return self.tf(img), label


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    set_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)  # ok: MLS301
    loader = DataLoader(AugmentedCIFAR("./data"), batch_size=128, shuffle=True, num_workers=4,
                        worker_init_fn=seed_worker, generator=g, pin_memory=True)
    model = torchvision.models.resnet18(num_classes=10).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
    crit = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    for epoch in range(args.epochs):
        model.train()
        for x, y in loader:
            loss = crit(model(x.cuda(non_blocking=True)), y.cuda(non_blocking=True))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
        torch.save(model.state_dict(), f"resnet18_e{epoch}.pt")


if __name__ == "__main__":
    main()
