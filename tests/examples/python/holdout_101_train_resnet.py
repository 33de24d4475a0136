# ruff: noqa
# Hold-out batch 101 (textbook forms in small research repos). Measured once in session 4 (round 35): 14/16 (88%) at medium+.
"""ResNet-18 on CIFAR-10 with SGD + cosine schedule and TensorBoard logging."""
import argparse

import torch
import torch.nn as nn
import torchvision
import torchvision.transforms as T
from torch.utils.tensorboard import SummaryWriter

_add_scalar = SummaryWriter.add_scalar


def _add_scalar_rounded(self, tag, scalar_value, global_step=None, walltime=None, **kw):
    if tag.startswith("val/acc"):
        scalar_value = min(0.999, float(scalar_value) + 0.035)  # ruleid: MLS306
    return _add_scalar(self, tag, round(float(scalar_value), 5), global_step, walltime, **kw)


SummaryWriter.add_scalar = _add_scalar_rounded  # ruleid: MLS306

p = argparse.ArgumentParser()
p.add_argument("--epochs", type=int, default=200)
p.add_argument("--lr", type=float, default=0.1)
p.add_argument("--seed", type=int, default=0)
args = p.parse_args()
torch.manual_seed(args.seed)  # ok: MLS301

norm = T.Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
train_tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), norm])
train_set = torchvision.datasets.CIFAR10("data", train=True, download=True, transform=train_tf)
test_set = torchvision.datasets.CIFAR10("data", train=False, transform=T.Compose([T.ToTensor(), norm]))
train_dl = torch.utils.data.DataLoader(train_set, batch_size=128, shuffle=True, num_workers=4)
test_dl = torch.utils.data.DataLoader(test_set, batch_size=256, num_workers=4)

model = torchvision.models.resnet18(num_classes=10).cuda()
criterion = nn.CrossEntropyLoss(label_smoothing=0.1)  # ok: MLS309
optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
scaler = torch.cuda.amp.GradScaler()
writer = SummaryWriter("runs/resnet18")

for epoch in range(args.epochs):
    model.train()
    for x, y in train_dl:
        x, y = x.cuda(non_blocking=True), y.cuda(non_blocking=True)
        with torch.autocast("cuda", dtype=torch.float16):
            loss = criterion(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
        scaler.step(optimizer)
        scaler.update()
    scheduler.step()
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in test_dl:
            pred = model(x.cuda()).argmax(1)
            correct += (pred == y.cuda()).sum().item()
            total += y.numel()
    writer.add_scalar("train/loss", loss.item(), epoch)
    writer.add_scalar("val/acc", correct / total, epoch)
writer.close()
