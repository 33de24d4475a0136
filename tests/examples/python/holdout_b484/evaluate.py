# ruff: noqa
# Hold-out batch 484 (family-focused 2/6, FixMatch semi-supervised classification). Measured once in session 21 (round 130): 5/30 (17%) at medium+.
"""Evaluation of the student / EMA teacher on the held-out test split."""
import argparse
import json
import logging

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader

from utils import accuracy, get_world_size, load_checkpoint, setup_logging

logger = logging.getLogger(__name__)


@torch.no_grad()
def evaluate(model, loader, device, num_classes, amp=False):
    was_training = model.training
    model.eval()
    totals = torch.zeros(4, dtype=torch.float64, device=device)  # loss_sum, top1, top5, count
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device)
    for images, targets in loader:
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, enabled=amp):
            logits = model(images)
        logits = logits.float()
        top1, top5 = accuracy(logits, targets, topk=(1, 5))
        totals[0] += F.cross_entropy(logits, targets, reduction="sum").double()
        totals[1] += top1.double()
        totals[2] += top5.double()
        totals[3] += targets.numel()
        pred = logits.argmax(dim=1)
        confusion.index_put_((targets, pred), torch.ones_like(pred), accumulate=True)

    if get_world_size() > 1:
        dist.all_reduce(totals)
        dist.all_reduce(confusion)
    model.train(was_training)

    count = totals[3].clamp_min(1.0)
    per_class = confusion.diag().float() / confusion.sum(dim=1).clamp_min(1).float()
    return {
        "loss": (totals[0] / count).item(),
        "top1": (100.0 * totals[1] / count).item(),
        "top5": (100.0 * totals[2] / count).item(),
        "mean_class_acc": 100.0 * per_class.mean().item(),
        "per_class_acc": [round(100.0 * a, 2) for a in per_class.tolist()],
    }


def main():
    from data import NUM_CLASSES, build_transforms, load_test_dataset
    from models import ModelEMA, build_model

    p = argparse.ArgumentParser(description="Evaluate a FixMatch checkpoint")
    p.add_argument("checkpoint")
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--data-dir", default="./data")
    p.add_argument("--download", action="store_true")
    p.add_argument("--img-size", type=int, default=32)
    p.add_argument("--num-classes", type=int, default=0)
    p.add_argument("--arch", default="wideresnet")
    p.add_argument("--depth", type=int, default=28)
    p.add_argument("--widen-factor", type=int, default=2)
    p.add_argument("--drop-rate", type=float, default=0.0)
    p.add_argument("--track-features", action="store_true")
    p.add_argument("--student", action="store_true", help="evaluate student instead of EMA teacher")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--out-json", default="")
    args = p.parse_args()

    setup_logging(".", 0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    num_classes = args.num_classes or NUM_CLASSES[args.dataset]
    test_ds = load_test_dataset(args, build_transforms(args.dataset, args.img_size)["test"])
    loader = DataLoader(test_ds, batch_size=args.batch_size, shuffle=False,
                        num_workers=args.workers, pin_memory=True)

    model = build_model(args, num_classes).to(device)
    ema = None if args.student else ModelEMA(model, device=device)
    load_checkpoint(args.checkpoint, model, ema=ema)
    target = model if ema is None else ema.ema

    results = evaluate(target, loader, device, num_classes)
    logger.info("top1 %.2f top5 %.2f mean-class %.2f loss %.4f", results["top1"], results["top5"],
                results["mean_class_acc"], results["loss"])
    if args.out_json:
        with open(args.out_json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
