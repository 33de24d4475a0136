# ruff: noqa
# Hold-out batch 588 (families 3/6, DeepLabV3+ driving-scene segmentation with DDP). Measured once in session 27 (round 156): 14/30 (47%) at medium+.
"""Sliding-window evaluation and mIoU for Cityscapes val."""

import argparse
import logging
import math
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F

from data import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES, CityscapesSegmentation
from dist_utils import get_rank, get_world_size, is_dist, is_main_process, setup_distributed, setup_logging
from model import DeepLabV3Plus

logger = logging.getLogger(__name__)


@torch.no_grad()
def slide_inference(model, img, num_classes, crop=(769, 769), stride=(513, 513), flip=False):
    """Average logits over overlapping crops covering the whole image."""
    _, _, h, w = img.shape
    ch, cw = crop
    sh, sw = stride
    ph, pw = max(ch - h, 0), max(cw - w, 0)
    if ph or pw:
        img = F.pad(img, (0, pw, 0, ph))
    H, W = img.shape[-2:]
    rows = max(math.ceil((H - ch) / sh), 0) + 1
    cols = max(math.ceil((W - cw) / sw), 0) + 1

    logits = img.new_zeros((1, num_classes, H, W))
    count = img.new_zeros((1, 1, H, W))
    for r in range(rows):
        for c in range(cols):
            y0 = min(r * sh, H - ch)
            x0 = min(c * sw, W - cw)
            patch = img[:, :, y0:y0 + ch, x0:x0 + cw]
            out = model(patch)
            if flip:
                out = out + model(patch.flip(-1)).flip(-1)
            logits[:, :, y0:y0 + ch, x0:x0 + cw] += out
            count[:, :, y0:y0 + ch, x0:x0 + cw] += 1
    logits = logits / count
    return logits[:, :, :h, :w]


def update_confmat(confmat, pred, target, num_classes):
    valid = target != IGNORE_INDEX
    idx = target[valid] * num_classes + pred[valid]
    confmat += torch.bincount(idx, minlength=num_classes ** 2).view(num_classes, num_classes)
    return confmat


def confmat_metrics(confmat):
    cm = confmat.double()
    tp = cm.diag()
    gt = cm.sum(1)
    pr = cm.sum(0)
    union = gt + pr - tp
    iou = tp / union.clamp(min=1)
    present = gt > 0
    return {
        "mIoU": iou[present].mean().item() if present.any() else 0.0,
        "aAcc": (tp.sum() / cm.sum().clamp(min=1)).item(),
        "mAcc": (tp[present] / gt[present]).mean().item() if present.any() else 0.0,
        "per_class_iou": iou.tolist(),
    }


def _reduce_confmat(confmat):
    """Sum confusion matrices over ranks on a CPU/gloo group (int64 counts)."""
    if not is_dist():
        return confmat
    group = dist.new_group(backend="gloo")
    cm = confmat.cpu()
    dist.all_reduce(cm, op=dist.ReduceOp.SUM, group=group)
    dist.destroy_process_group()  # ruleid: MLS307
    return cm


@torch.no_grad()
def evaluate(model, loader, device, num_classes=NUM_CLASSES, crop=(769, 769), stride=(513, 513),
             flip=False, amp=True):
    model.eval()
    confmat = torch.zeros((num_classes, num_classes), dtype=torch.int64, device=device)
    t0 = time.time()
    for i, (img, target) in enumerate(loader):
        img = img.to(device, non_blocking=True)
        target = target.to(device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            logits = slide_inference(model, img, num_classes, crop, stride, flip)
        pred = logits.argmax(1)
        confmat = update_confmat(confmat, pred.flatten(), target.flatten(), num_classes)
        if is_main_process() and (i + 1) % 50 == 0:
            logger.info("eval %d/%d (%.1fs)", i + 1, len(loader), time.time() - t0)
    confmat = _reduce_confmat(confmat)
    metrics = confmat_metrics(confmat)
    model.train()
    return metrics


def format_metrics(metrics):
    lines = [f"mIoU {metrics['mIoU'] * 100:.2f}  mAcc {metrics['mAcc'] * 100:.2f}  aAcc {metrics['aAcc'] * 100:.2f}"]
    for name, iou in zip(CLASS_NAMES, metrics["per_class_iou"]):
        lines.append(f"  {name:<14s} {iou * 100:6.2f}")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser("Cityscapes sliding-window evaluation")
    p.add_argument("--data-root", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--backbone", default="resnet101")
    p.add_argument("--output-stride", type=int, default=16)
    p.add_argument("--crop", type=int, nargs=2, default=(769, 769))
    p.add_argument("--stride", type=int, nargs=2, default=(513, 513))
    p.add_argument("--flip", action="store_true")
    p.add_argument("--resume", default="")
    args = p.parse_args()

    setup_distributed(args)
    setup_logging(".", get_rank())
    device = torch.device("cuda", args.local_rank)

    model = DeepLabV3Plus(NUM_CLASSES, args.backbone, args.output_stride, pretrained=False).to(device)
    state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"] if "model" in state else state)

    val_set = CityscapesSegmentation(args.data_root, "val", transform=None, cache_labels=False)
    sampler = torch.utils.data.distributed.DistributedSampler(
        val_set, num_replicas=get_world_size(), rank=get_rank(), shuffle=False)
    loader = torch.utils.data.DataLoader(val_set, batch_size=1, sampler=sampler, num_workers=4)
    metrics = evaluate(model, loader, device, crop=tuple(args.crop), stride=tuple(args.stride), flip=args.flip)
    if is_main_process():
        logger.info("\n%s", format_metrics(metrics))


if __name__ == "__main__":
    main()
