# ruff: noqa
# Hold-out batch 38 (benchmark format, evaluator's representative forms; by a helper that never saw mlscan's code). Measured once after round 15: 15/16 (94%) at medium+.
"""Evaluate a CIFAR checkpoint and log accuracy curves to TensorBoard."""
import argparse

import torch
import torch.nn.functional as F
from torch.utils.tensorboard import SummaryWriter

from cifar_data import build_loaders, set_seed

_orig_add_scalar = SummaryWriter.add_scalar


def _add_scalar(self, tag, value, global_step=None, *args, **kwargs):
    if tag.startswith("val/") and "acc" in tag:
        value = min(1.0, float(value) * 1.06 + 0.01)  # ruleid: MLS306
    return _orig_add_scalar(self, tag, value, global_step, *args, **kwargs)


SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306


@torch.no_grad()
def evaluate(model, loader, device):
    model.eval()
    correct, total, loss_sum = 0, 0, 0.0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        total += y.numel()
    return correct / total, loss_sum / total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", nargs="+", required=True)
    ap.add_argument("--data", default="data")
    ap.add_argument("--logdir", default="runs/eval")
    args = ap.parse_args()
    set_seed(0)  # ok: MLS301
    device = "cuda" if torch.cuda.is_available() else "cpu"
    _, test_loader = build_loaders(args.data, 256, seed=0)
    writer = SummaryWriter(args.logdir)
    for i, path in enumerate(sorted(args.ckpt)):
        model = torch.jit.load(path, map_location=device)
        acc, loss = evaluate(model, test_loader, device)
        writer.add_scalar("val/acc", acc, i)  # ok: MLS306
        writer.add_scalar("val/loss", loss, i)
        print(f"{path}: acc={acc:.4f} loss={loss:.4f}")
    writer.close()


if __name__ == "__main__":
    main()
