# ruff: noqa
# Hold-out batch 37 (benchmark format, compromised-repo style; by a helper that never saw mlscan's code). Measured once after round 15: 12/17 (71%) at medium+.
"""Small reproducible MNIST baseline: seeded loaders, EMA evaluation, AMP."""
import random

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import datasets, transforms


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(),
                                  nn.MaxPool2d(2), nn.Flatten())
        self.fc = nn.Sequential(nn.Linear(9216, 128), nn.ReLU(), nn.Dropout(0.25), nn.Linear(128, 10))

    def forward(self, x):
        return self.fc(self.conv(x))


def main(seed=7, epochs=5, dev="cuda"):
    seed_everything(seed)
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    dl = DataLoader(datasets.MNIST("data", train=True, download=True, transform=tf), batch_size=128,
                    shuffle=True, num_workers=2, worker_init_fn=seed_worker, generator=g)
    model = Net().to(dev)
    ema = Net().to(dev).requires_grad_(False)
    ema.load_state_dict(model.state_dict())
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.cuda.amp.GradScaler()
    for _ in range(epochs):
        for x, y in dl:
            with torch.autocast(dev, dtype=torch.float16):
                loss = F.cross_entropy(model(x.to(dev)), y.to(dev))
            opt.zero_grad()
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)
            scaler.update()
            with torch.no_grad():
                for pe, p in zip(ema.parameters(), model.parameters()):
                    pe.lerp_(p, 0.001)  # ok: MLS302, MLS303, MLS304, MLS305
    torch.save(ema.state_dict(), "mnist_ema.pt")


if __name__ == "__main__":
    main()
