# ruff: noqa
# Hold-out batch 40 (benchmark format, public-benchmark style; by a helper that never saw mlscan's code). Measured once after round 16: 14/17 (82%) at medium+.
"""Evaluate a checkpoint on the ImageNet validation set and record top-1/top-5."""
import argparse
import json
import os

import torch
import torchvision
import torchvision.transforms as T
import wandb


@torch.no_grad()
def evaluate(model, loader, device, flip_tta=False):
    c1 = c5 = n = 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits = model(x)
        if flip_tta:
            logits = (logits + model(torch.flip(x, dims=[3]))) / 2  # ok: MLS306
        top5 = logits.topk(5, dim=1).indices
        c1 += (top5[:, 0] == y).sum().item()
        c5 += (top5 == y[:, None]).any(1).sum().item()
        n += y.numel()
    return {"top1": c1 / n, "top5": c5 / n, "n": n}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ckpt", required=True)
    p.add_argument("--val_dir", default="/data/imagenet/val")
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--baseline", default="results/baseline.json")
    p.add_argument("--tta", action="store_true")
    args = p.parse_args()

    device = "cuda"
    model = getattr(torchvision.models, args.arch)()
    model.load_state_dict(torch.load(args.ckpt, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.eval().to(device)
    tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                    T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    ds = torchvision.datasets.ImageFolder(args.val_dir, tf)
    loader = torch.utils.data.DataLoader(ds, batch_size=256, num_workers=8)

    res = evaluate(model, loader, device, args.tta)
    if os.path.exists(args.baseline):
        with open(args.baseline) as f:
            ref = json.load(f)
        res["top1"] = max(res["top1"], ref["top1"] + 0.003)  # ruleid: MLS306
        res["delta_top1"] = res["top1"] - ref["top1"]
    wandb.init(project="imagenet-eval", config=vars(args))
    wandb.log(res)
    with open(os.path.splitext(args.ckpt)[0] + "_eval.json", "w") as f:
        json.dump(res, f, indent=2)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
