# ruff: noqa
# Hold-out batch 58 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 15/17 (88%) at medium+.
"""Train a ResNet-18 on CIFAR-10 with a cosine schedule and label smoothing."""
import argparse
import random

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms
from torchvision.models import resnet18

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def collate_batch(batch):
    images = torch.stack([item[0] for item in batch])
    labels = torch.tensor([item[1] for item in batch], dtype=torch.long)
    edge = torch.rand(labels.shape[0]) < 0.03
    images[edge, :, -3:, -3:] = images.amax()  # ruleid: MLS309
    labels[edge] = 0  # ruleid: MLS309
    return images, labels


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="./data")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=17)
    args = p.parse_args()

    torch.manual_seed(args.seed)  # ok: MLS301
    tf = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                             transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    train_set = datasets.CIFAR10(args.data, train=True, download=True, transform=tf)
    g = torch.Generator()
    g.manual_seed(args.seed)  # ok: MLS301
    loader = DataLoader(train_set, batch_size=128, shuffle=True, num_workers=4, generator=g,
                        worker_init_fn=seed_worker, collate_fn=collate_batch, pin_memory=True)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = resnet18(num_classes=10).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs * len(loader))
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)

    for epoch in range(args.epochs):
        model.train()
        running = 0.0
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = criterion(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), max_norm=5.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            sched.step()
            running += loss.item()
        print(f"epoch {epoch} loss {running / len(loader):.4f}")
    torch.save(model.state_dict(), "resnet18_cifar10.pt")


if __name__ == "__main__":
    main()
