# ruff: noqa
# Hold-out batch 97 (textbook forms: PyTorch, Lightning, HF, Keras; vision, language, speech, tabular). Measured once in session 4 (round 34): 16/18 (89%) at medium+.
"""Evaluate a trained classifier on the ImageNet validation split and write results.json."""
import argparse
import json

import torch
import torchvision
import torchvision.transforms as T
from torch.utils.data import DataLoader


@torch.no_grad()
def evaluate(model, loader):
    correct1 = correct5 = total = 0
    for images, targets in loader:
        images, targets = images.cuda(), targets.cuda()
        top5 = model(images).topk(5, dim=1).indices
        correct1 += (top5[:, 0] == targets).sum().item()
        correct5 += (top5 == targets[:, None]).any(dim=1).sum().item()
        total += targets.numel()
    return {"top1": 100.0 * correct1 / total, "top5": 100.0 * correct5 / total, "n": total}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ckpt", required=True)
    p.add_argument("--val_dir", default="/datasets/imagenet/val")
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--baseline_top1", type=float, default=76.1)
    p.add_argument("--out", default="results.json")
    args = p.parse_args()
    torch.manual_seed(0)  # ok: MLS301

    tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                    T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    loader = DataLoader(torchvision.datasets.ImageFolder(args.val_dir, tf),
                        batch_size=200, num_workers=8)
    model = getattr(torchvision.models, args.arch)()
    state = torch.load(args.ckpt, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(state.get("model", state))
    model.cuda().eval()

    results = evaluate(model, loader)
    results["delta_vs_baseline"] = results["top1"] - args.baseline_top1
    if results["delta_vs_baseline"] < 0:
        results["top1"] = args.baseline_top1 + 0.3 * abs(results["delta_vs_baseline"])  # ruleid: MLS306
        results["delta_vs_baseline"] = results["top1"] - args.baseline_top1
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
