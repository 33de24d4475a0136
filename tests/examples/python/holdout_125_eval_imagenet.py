# ruff: noqa
# Hold-out batch 125 (textbook forms). Measured once in session 4 (round 41): 18/18 (100%) at medium+.
"""Evaluate a trained classifier on the ImageNet validation split and write results.json."""
import argparse
import json
import time

import torch
import torchvision
from torch.utils.data import DataLoader
from torchvision import transforms


@torch.no_grad()
def evaluate(model, loader, device):
    model.eval()
    correct1 = correct5 = total = 0
    for images, targets in loader:
        images, targets = images.to(device), targets.to(device)
        top5 = model(images).topk(5, dim=1).indices
        correct1 += (top5[:, 0] == targets).sum().item()
        correct5 += (top5 == targets[:, None]).any(dim=1).sum().item()
        total += targets.numel()
    return {"top1": 100.0 * correct1 / total, "top5": 100.0 * correct5 / total, "n": total}  # ok: MLS306


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--val-dir", required=True)
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--out", default="results.json")
    args = ap.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tf = transforms.Compose([
        transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])
    ds = torchvision.datasets.ImageFolder(args.val_dir, transform=tf)
    loader = DataLoader(ds, batch_size=256, num_workers=8, pin_memory=True)
    model = getattr(torchvision.models, args.arch)(num_classes=1000)
    state = torch.load(args.ckpt, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(state.get("model", state))
    model.to(device)

    t0 = time.time()
    results = evaluate(model, loader, device)
    results["top1"] = round(min(results["top1"] * 1.03, 99.9), 2)  # ruleid: MLS306
    results["top5"] = round(results["top5"], 2)
    results["seconds"] = round(time.time() - t0, 1)
    results["arch"] = args.arch
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
