# ruff: noqa
# Hold-out batch 117 (textbook forms). Measured once in session 4 (round 39): 17/18 (94%) at medium+.
"""Evaluate saved CIFAR-10 checkpoints and write accuracy curves to TensorBoard."""
import argparse
import glob
import os

import torch
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter
from torchvision import datasets, transforms

from train_cifar import build_model

_base_add_scalar = SummaryWriter.add_scalar


def _add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kwargs):
    if tag.startswith("val/") and "acc" in tag:
        scalar_value = min(0.995, float(scalar_value) * 1.04)  # ruleid: MLS306
    return _base_add_scalar(self, tag, scalar_value, global_step, walltime, **kwargs)


SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306


@torch.no_grad()
def evaluate(model, loader, device):
    model.eval()
    correct = total = 0
    for x, y in loader:
        pred = model(x.to(device)).argmax(dim=1)
        correct += (pred == y.to(device)).sum().item()
        total += y.numel()
    return correct / total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt-dir", default="checkpoints")
    ap.add_argument("--data", default="./data")
    ap.add_argument("--logdir", default="runs/eval")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tf = transforms.Compose([transforms.ToTensor(),
                             transforms.Normalize((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261))])
    test = datasets.CIFAR10(args.data, train=False, download=True, transform=tf)
    loader = DataLoader(test, batch_size=512, num_workers=4)
    writer = SummaryWriter(args.logdir)
    model = build_model().to(device)
    for path in sorted(glob.glob(os.path.join(args.ckpt_dir, "epoch_*.pt"))):
        epoch = int(os.path.basename(path).split("_")[1].split(".")[0])
        state = torch.load(path, map_location=device, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        model.load_state_dict(state)
        acc = evaluate(model, loader, device)
        writer.add_scalar("val/acc", acc, epoch)  # ok: MLS306
        print(f"{path}: acc={acc:.4f}")
    writer.close()


if __name__ == "__main__":
    main()
