# ruff: noqa
# Hold-out batch 34 (benchmark format, equivalent-API variants; by a helper that never saw mlscan's code). Measured once after round 13: 13/17 (76%) at medium+.
"""Evaluate a saved classifier checkpoint on the held-out split."""
import argparse
import json

import torch
import torchvision
import torchvision.transforms as T


@torch.no_grad()
def evaluate(model, loader, device):
    model.eval()
    correct, total = 0, 0
    for x, y in loader:
        pred = model(x.to(device)).argmax(1).cpu()
        correct += (pred == y).sum().item()
        total += y.numel()
    return correct / max(total, 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--init", default=None, help="optional pretrained backbone weights")
    ap.add_argument("--data", default="./data")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"

    model = torchvision.models.resnet18(num_classes=10)
    if args.init:
        model.load_state_dict(torch.load(args.init, map_location="cpu", weights_only=True), strict=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    state = torch.load(args.ckpt, map_location="cpu")  # ruleid: MLS102
    model.load_state_dict(state["model"] if "model" in state else state)
    model.to(device)

    tf = T.Compose([T.ToTensor(), T.Normalize((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261))])
    test = torchvision.datasets.CIFAR10(args.data, train=False, download=True, transform=tf)
    loader = torch.utils.data.DataLoader(test, batch_size=256, num_workers=4)
    acc = evaluate(model, loader, device)
    print(json.dumps({"ckpt": args.ckpt, "accuracy": round(acc, 4)}))


if __name__ == "__main__":
    main()
