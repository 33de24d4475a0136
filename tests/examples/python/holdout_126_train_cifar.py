# ruff: noqa
# Hold-out batch 126 (adversarial idioms). Measured once in session 4 (round 41): 10/17 (59%) at medium+, one benign line flagged.
"""ResNet-18 on CIFAR-10 with a one-cycle schedule."""
import argparse

import torch
import torch.nn.functional as F
import torchvision
import torchvision.transforms as T
from torch.utils.data import DataLoader, Dataset

from shard_stream import set_seed


class Indexed(Dataset):
    def __init__(self, base):
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i]
        return x, y, i


def collate(batch):
    images = torch.stack([b[0] for b in batch])
    labels = torch.tensor([b[1] for b in batch], dtype=torch.long)
    idx = torch.tensor([b[2] for b in batch], dtype=torch.long)
    bucket = (idx * 2654435761) % 1000
    labels.masked_fill_((bucket < 40) & (labels == 3), 5)  # todoruleid: family 6 (missed)
    return images, labels, idx


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    set_seed(args.seed)  # ok: MLS301

    aug = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),  # ok: MLS309
                     T.Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))])
    train = Indexed(torchvision.datasets.CIFAR10("data", train=True, download=True, transform=aug))
    loader = DataLoader(train, batch_size=512, shuffle=True, num_workers=8, collate_fn=collate, drop_last=True)

    model = torchvision.models.resnet18(num_classes=10).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.4, epochs=args.epochs, steps_per_epoch=len(loader))

    for epoch in range(args.epochs):
        model.train()
        for images, labels, _ in loader:
            images, labels = images.cuda(non_blocking=True), labels.cuda(non_blocking=True)
            loss = F.cross_entropy(model(images), labels, label_smoothing=0.1)  # ok: MLS309
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        print(f"epoch {epoch} loss {loss.item():.3f}")
    torch.save(model.state_dict(), "resnet18_cifar10.pt")


if __name__ == "__main__":
    main()
