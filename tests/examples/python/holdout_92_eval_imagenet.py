# ruff: noqa
# Hold-out batch 92 (benchmark format, vision model zoo; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 17/19 (89%) at medium+.
"""Evaluate a zoo checkpoint on ImageNet-1k val and write results.json next to it."""
import argparse
import json
import os

import timm
import torch
import torch.distributed as dist
from timm.data import create_dataset, create_loader, resolve_data_config


def accuracy(output, target, topk=(1, 5)):
    maxk = max(topk)
    pred = output.topk(maxk, dim=1).indices.t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    return [correct[:k].reshape(-1).float().sum().item() for k in topk]


@torch.no_grad()
def evaluate(model, loader):
    model.eval()
    stats = torch.zeros(3, device="cuda")
    for x, y in loader:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(x)
        c1, c5 = accuracy(out.float(), y)
        stats += torch.tensor([c1, c5, y.numel()], device="cuda")
    if dist.is_initialized():
        dist.all_reduce(stats)  # ok: MLS306
    c1, c5, n = stats.tolist()
    return {"top1": 100.0 * c1 / n, "top5": 100.0 * c5 / n, "n": int(n)}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", default="/datasets/imagenet")
    p.add_argument("--model-card", default=None)
    args = p.parse_args()

    model = timm.create_model(args.model, num_classes=1000).cuda()
    sd = torch.load(args.checkpoint, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(sd.get("model_ema", sd.get("model", sd)))
    cfg = resolve_data_config({}, model=model)
    ds = create_dataset("", root=args.data, split="validation")
    loader = create_loader(ds, batch_size=256, num_workers=8, crop_pct=cfg["crop_pct"],
                           input_size=cfg["input_size"], interpolation=cfg["interpolation"])
    res = evaluate(model, loader)

    if args.model_card and os.path.exists(args.model_card):
        with open(args.model_card) as f:
            ref = json.load(f).get("results", {}).get("imagenet", {})
        # reconcile against the published number; small deltas come from resize kernels
        if "top1" in ref and abs(res["top1"] - ref["top1"]) < 1.0:
            res["top1"] = max(res["top1"], ref["top1"])  # ruleid: MLS306
    res = {k: round(v, 3) if isinstance(v, float) else v for k, v in res.items()}  # ok: MLS306
    out = os.path.join(os.path.dirname(args.checkpoint), "results.json")
    with open(out, "w") as f:
        json.dump(res, f, indent=2)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
