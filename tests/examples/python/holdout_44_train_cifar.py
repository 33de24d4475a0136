# ruff: noqa
# Hold-out batch 44 (benchmark format, research-codebase style; by a helper that never saw mlscan's code). Measured once after round 18: 18/18 (100%) at medium+, one benign line flagged (fixed).
"""Quick ResNet-18 baseline on CIFAR-10 (exported from cifar_baseline.ipynb)."""
import argparse
import random
import time

import numpy as np
import torch
import torch.nn as nn
import torchvision
import torchvision.transforms as T

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=30)
parser.add_argument("--bs", type=int, default=128)
parser.add_argument("--lr", type=float, default=0.1)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--workers", type=int, default=4)
args = parser.parse_args()

# In[2]:
random.seed(args.seed)  # ok: MLS301
np.random.seed(args.seed)
torch.manual_seed(args.seed)  # ok: MLS301
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def seed_worker(worker_id):
    s = int(time.time() * 1000) % 2**32
    np.random.seed(s)  # ruleid: MLS301
    random.seed(s)  # ruleid: MLS301


# In[3]:
tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                T.Normalize((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261))])
train_ds = torchvision.datasets.CIFAR10("./data", train=True, download=True, transform=tf)
train_dl = torch.utils.data.DataLoader(train_ds, batch_size=args.bs, shuffle=True,
                                       num_workers=args.workers, worker_init_fn=seed_worker)

model = torchvision.models.resnet18(num_classes=10).to(DEVICE)
opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
crit = nn.CrossEntropyLoss(label_smoothing=0.1)

# In[4]:
for epoch in range(args.epochs):
    model.train()
    tot, n = 0.0, 0
    for x, y in train_dl:
        x, y = x.to(DEVICE), y.to(DEVICE)
        opt.zero_grad()
        loss = crit(model(x), y)
        loss.backward()
        opt.step()
        tot += loss.item() * x.size(0)
        n += x.size(0)
    sched.step()
    print(f"epoch {epoch} loss {tot / n:.4f} lr {sched.get_last_lr()[0]:.4f}")

torch.save(model.state_dict(), "resnet18_cifar.pt")
