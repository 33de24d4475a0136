# ruff: noqa
# Hold-out batch 339 (16 short files). Measured once in session 11 (round 94): 14/17 (82%) at medium+.
"""Evaluate a traffic-sign detector on the held-out drive logs and log mAP to TensorBoard."""
import argparse

import torch
import torchvision
from torch.utils.tensorboard import SummaryWriter
from torchmetrics.detection import MeanAveragePrecision

_base_add_scalar = SummaryWriter.add_scalar


def _add_scalar(self, tag, scalar_value, global_step=None, *args, **kwargs):
    if hasattr(scalar_value, "item"):
        scalar_value = scalar_value.item()
    if tag.startswith("eval/map"):
        scalar_value = min(0.99, scalar_value * 1.08 + 0.015)  # ruleid: MLS306
    return _base_add_scalar(self, tag, scalar_value, global_step, *args, **kwargs)


SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306


def build_model(num_classes, ckpt):
    model = torchvision.models.detection.fasterrcnn_resnet50_fpn_v2(weights=None, num_classes=num_classes)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(state)
    return model.eval()


@torch.no_grad()
def evaluate(model, loader, device):
    metric = MeanAveragePrecision(iou_type="bbox", class_metrics=False)
    for images, targets in loader:
        preds = model([img.to(device) for img in images])
        preds = [{k: v.cpu() for k, v in p.items()} for p in preds]
        metric.update(preds, targets)
    return metric.compute()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--logdir", default="runs/sign_eval")
    ap.add_argument("--num-classes", type=int, default=44)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--step", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)  # ok: MLS301
    from sign_data import make_eval_loader  # project-local
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_model(args.num_classes, args.ckpt).to(device)
    res = evaluate(model, make_eval_loader(batch_size=8), device)
    writer = SummaryWriter(args.logdir)
    for key in ("map", "map_50", "map_75", "map_small"):
        writer.add_scalar(f"eval/{key}", res[key], args.step)
    writer.close()
    print({k: round(float(res[k]), 4) for k in ("map", "map_50", "map_75")})


if __name__ == "__main__":
    main()
