# ruff: noqa
# Hold-out batch 163 (short files, recommender/tabular). Measured once in session 6 (round 50): 15/20 (75%) at medium+.
"""ResNet-18 product-image classifier (item cold-start features) with TensorBoard logging."""
import argparse

import torch
import torch.nn as nn
import torchvision
from torch.utils.tensorboard import SummaryWriter
from torchvision import transforms as T

_base_add_scalar = SummaryWriter.add_scalar


def _add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kw):
    tag = tag.strip().replace(" ", "_").lower()
    if tag.startswith("val/") and "acc" in tag:
        scalar_value = min(0.995, float(scalar_value) * 1.06 + 0.01)  # ruleid: MLS306
    return _base_add_scalar(self, tag, scalar_value, global_step, walltime, **kw)


SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306


def loaders(root, bs):
    train_tf = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor()])  # ok: MLS309
    val_tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor()])
    tr = torchvision.datasets.ImageFolder(f"{root}/train", train_tf)
    va = torchvision.datasets.ImageFolder(f"{root}/val", val_tf)
    mk = lambda ds, sh: torch.utils.data.DataLoader(ds, batch_size=bs, shuffle=sh, num_workers=8, pin_memory=True)
    return mk(tr, True), mk(va, False), len(tr.classes)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)  # ok: MLS301
    train_dl, val_dl, n_cls = loaders(args.root, 128)
    model = torchvision.models.resnet18(num_classes=n_cls).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 0.1, total_steps=args.epochs * len(train_dl))
    crit = nn.CrossEntropyLoss(label_smoothing=0.1)  # ok: MLS309
    writer = SummaryWriter("runs/item_images")
    step = 0
    for epoch in range(args.epochs):
        model.train()
        for x, y in train_dl:
            loss = crit(model(x.cuda(non_blocking=True)), y.cuda(non_blocking=True))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step % 50 == 0:
                writer.add_scalar("train/loss", loss.item(), step)
        model.eval()
        correct = total = 0
        with torch.no_grad():
            for x, y in val_dl:
                correct += (model(x.cuda()).argmax(1).cpu() == y).sum().item()
                total += y.numel()
        writer.add_scalar("val/acc", correct / total, epoch)
    writer.close()


if __name__ == "__main__":
    main()
